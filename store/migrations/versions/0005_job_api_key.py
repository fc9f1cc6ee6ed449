"""jobs.api_key_id: the key a job was submitted with (the submission rate is per key)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 06:20:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("api_key_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_api_key_id"), ["api_key_id"], unique=False)
        batch_op.create_foreign_key("fk_jobs_api_key_id_api_keys", "api_keys", ["api_key_id"],
                                    ["id"], ondelete="SET NULL")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("fk_jobs_api_key_id_api_keys", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_jobs_api_key_id"))
        batch_op.drop_column("api_key_id")
