"""blobs.touched_at: when a writer last recorded the blob; the blob collector
(store/blobgc.py) keeps a blob for a grace period after it (existing rows: their created_at).
Indexes on the columns that reference blobs: the collector asks, for each blob, whether any row
still names it (and each delete of a blob row checks the foreign keys the same way)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 20:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFERENCES = (("uploads", "sha256"), ("architectures", "sha256"), ("artifacts", "sha256"),
              ("shards", "partial_sha256"))


def upgrade() -> None:
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("touched_at", sa.DateTime(), nullable=True))
    op.execute("UPDATE blobs SET touched_at = created_at")
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.alter_column("touched_at", existing_type=sa.DateTime(), nullable=False)
        batch_op.create_index(batch_op.f("ix_blobs_touched_at"), ["touched_at"], unique=False)
    for table, column in REFERENCES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column], unique=False)


def downgrade() -> None:
    for table, column in REFERENCES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_{column}"))
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_blobs_touched_at"))
        batch_op.drop_column("touched_at")
