"""uploads.arrays: shape and dtype of each array of an upload, from its .npy headers

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 17:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL for uploads stored before: the API reads their headers from the blob when a job
    # first uses them (jobs/kinds/poison.py).
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("arrays", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_column("arrays")
