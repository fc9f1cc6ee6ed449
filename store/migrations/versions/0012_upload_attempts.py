"""upload_attempts: every upload or architecture request that passed the rate limit, stored or
refused, so that the upload rate (api/ratelimit.py) also counts refused uploads

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 03:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "upload_attempts",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("upload_attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_upload_attempts_api_key_id"), ["api_key_id"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("upload_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_upload_attempts_api_key_id"))
    op.drop_table("upload_attempts")
