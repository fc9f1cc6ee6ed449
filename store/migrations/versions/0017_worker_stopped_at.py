"""workers.stopped_at: when a worker shut down cleanly, so that it stops counting as connected
at once rather than for the heartbeat timeout after its last beat (its processes were counted as
free slots, and shards sent to them waited at the broker ahead of other users' work)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 01:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stopped_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("stopped_at")
