"""Alembic creates the schema on an empty database, and the schema matches the models."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from store.migrate import MIGRATIONS, alembic_config, downgrade, upgrade
from store.models import Base
from tests.fixtures import ThrowawayDatabases

TABLES = {"users", "api_keys", "blobs", "jobs", "shards", "artifacts", "uploads", "architectures",
          "catalog", "workers", "upload_attempts", "architecture_costs"}


def _check_round_trip(url: str) -> None:
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) == set()
        upgrade(url)
        assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
        with engine.connect() as conn:
            head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
            assert head == max(p.stem[:4] for p in MIGRATIONS.glob("versions/0*.py"))
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
        upgrade(url)  # idempotent
        downgrade(url, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()


def test_migrations_on_an_empty_postgres_database(databases: ThrowawayDatabases) -> None:
    _check_round_trip(databases.create())


def test_migrations_on_an_empty_sqlite_database(tmp_path: Path) -> None:
    _check_round_trip(f"sqlite:///{tmp_path / 'empty.db'}")
