"""architecture_costs: one forward pass of a torchvision builder at an input shape and output
count (MACs, parameters, activations, or why it cannot take the shape), counted once by a
worker on torch's meta device, so that its jobs are estimated and refused like the built-ins

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 06:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "architecture_costs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("architecture", sa.String(length=100), nullable=False),
        sa.Column("input_shape", sa.String(length=64), nullable=False),
        sa.Column("num_outputs", sa.Integer(), nullable=False),
        sa.Column("macs", sa.BigInteger(), nullable=True),
        sa.Column("params", sa.BigInteger(), nullable=True),
        sa.Column("activations", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("counted_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("architecture", "input_shape", "num_outputs",
                            name="uq_architecture_costs_key"),
    )


def downgrade() -> None:
    op.drop_table("architecture_costs")
