"""workers.native_bf16: whether a worker's device computes bfloat16 in hardware (its
calibration says), so that a bf16 job's estimate on a CPU that emulates it is not the fp32 one

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 16:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("native_bf16", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("native_bf16")
