"""architectures.output: which element of a tuple, list or dict output an uploaded network's
output is (named at upload, checked at validation); workers.datasets: the named datasets each
worker can read, so that a job naming one no connected worker holds is refused at submission

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 03:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("architectures", schema=None) as batch_op:
        batch_op.add_column(sa.Column("output", sa.String(length=100), nullable=True))
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("datasets", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("datasets")
    with op.batch_alter_table("architectures", schema=None) as batch_op:
        batch_op.drop_column("output")
