"""Session fixtures of the API, store and service tests (a plugin of tests/conftest.py): the
machine's REAL Postgres and Redis and the API served over HTTP by uvicorn, with keys for alice
and bob. Nothing of ours is mocked. The real Celery worker is tests/service/conftest.py's.

Each test session gets a throwaway Postgres database and a Redis database number, dropped and
flushed at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import redis

from api.main import create_app
from store.db import get_engine
from store.migrate import upgrade
from store.settings import Settings
from tests.support import METRICS_TOKEN, ServerThread, keyed_client, new_key

PG_ADMIN = os.environ.get("NADS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("NADS_TEST_REDIS", "redis://127.0.0.1:6379")
# Under pytest-xdist each worker process (gw0, gw1, ...) is a test session of its own with its
# own Postgres database (uuid-named) and the Redis database after the base: gw0 13, gw1 14...
REDIS_DB = (int(os.environ.get("NADS_TEST_REDIS_DB", "13"))
            + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0))


def sqlalchemy_url(pg_url: str) -> str:
    return pg_url.replace("postgresql://", "postgresql+psycopg://", 1)


class ThrowawayDatabases:
    """Creates Postgres databases for this session and drops them all at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def create(self) -> str:
        name = f"nads_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return sqlalchemy_url(PG_ADMIN.rsplit("/", 1)[0] + "/" + name)

    def drop_all(self) -> None:
        for name in self.names:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def databases() -> Iterator[ThrowawayDatabases]:
    dbs = ThrowawayDatabases()
    yield dbs
    get_engine.cache_clear()
    dbs.drop_all()


@pytest.fixture(scope="session")
def database_url(databases: ThrowawayDatabases) -> str:
    url = databases.create()
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    url = f"{REDIS}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def settings(database_url: str, broker_url: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Settings:
    data = tmp_path_factory.mktemp("nads-data")
    return Settings(data_dir=data, database_url=database_url, broker_url=broker_url,
                    blob_dir=data / "blobs", progress_interval_s=0.2,
                    # alice uploads dozens of models a minute across the suite;
                    # test_upload_rate.py checks the default on its own server
                    upload_rate_per_minute=0, metrics_token=METRICS_TOKEN)


@pytest.fixture(scope="session")
def api_url(settings: Settings) -> Iterator[str]:
    with ServerThread(create_app(settings)) as server:
        yield server.url


def _user(settings: Settings, api_url: str, name: str) -> Iterator[httpx.Client]:
    """A client of the API with the key of a new user `name`-<random>."""
    key = new_key(settings, f"{name}-{uuid.uuid4().hex[:6]}")
    with keyed_client(api_url, key) as client:
        yield client


@pytest.fixture(scope="session")
def alice(settings: Settings, api_url: str) -> Iterator[httpx.Client]:
    yield from _user(settings, api_url, "alice")


@pytest.fixture(scope="session")
def bob(settings: Settings, api_url: str) -> Iterator[httpx.Client]:
    yield from _user(settings, api_url, "bob")


@pytest.fixture(scope="session")
def anonymous(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=30) as client:
        yield client
