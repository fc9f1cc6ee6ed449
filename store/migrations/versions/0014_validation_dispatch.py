"""architectures.validation_sent_at: when the architecture's validation was sent to the
validation lane (null: held in the database for a free slot of the lane, sent fairly between
users by jobs/dispatch.py `dispatch_validations`)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 06:20:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("architectures", schema=None) as batch_op:
        batch_op.add_column(sa.Column("validation_sent_at", sa.DateTime(), nullable=True))
    # Every validation before this revision was sent at upload: none is held.
    op.execute("UPDATE architectures SET validation_sent_at = updated_at")


def downgrade() -> None:
    with op.batch_alter_table("architectures", schema=None) as batch_op:
        batch_op.drop_column("validation_sent_at")
