"""uploads.api_key_id and architectures.api_key_id: uploads and architecture validations are
rate-limited per API key like job submissions (api/ratelimit.py)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 17:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("uploads", "architectures")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("api_key_id", sa.Integer(), nullable=True))
            batch_op.create_index(batch_op.f(f"ix_{table}_api_key_id"), ["api_key_id"],
                                  unique=False)
            batch_op.create_foreign_key(f"fk_{table}_api_key_id_api_keys", "api_keys",
                                        ["api_key_id"], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_api_key_id_api_keys", type_="foreignkey")
            batch_op.drop_index(batch_op.f(f"ix_{table}_api_key_id"))
            batch_op.drop_column("api_key_id")
