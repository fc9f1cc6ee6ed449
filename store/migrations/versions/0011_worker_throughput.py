"""workers.device, gpus, processes, queues, throughput: what each worker computes on and how
fast (FLOP/s of one process by job kind), so that a job's run time is estimated at submission
from the workers connected (jobs/fleet.py) and shards are dispatched to the slots they have

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 17:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("device", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("gpus", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("processes", sa.Integer(), nullable=False,
                                      server_default="1"))
        batch_op.add_column(sa.Column("queues", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("throughput", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("throughput")
        batch_op.drop_column("queues")
        batch_op.drop_column("processes")
        batch_op.drop_column("gpus")
        batch_op.drop_column("device")
