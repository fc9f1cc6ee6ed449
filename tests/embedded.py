"""Fixtures of the jobs and worker unit tests (imported by tests/jobs/conftest.py and
tests/worker/conftest.py): the domain layer on the embedded defaults, a SQLite database (the
schema of store/models.py) and kombu's filesystem broker in a temporary folder, the same pair
`nads serve` runs on. No worker process, no network: these tests run in seconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy.orm import Session

from jobs.broker import make_celery
from store.db import get_engine, get_sessionmaker
from store.models import ApiKey, Base, User
from store.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Eight dispatch slots: every shard of these tests' jobs is sent at once (fair dispatch,
    which holds shards back for the slots the workers have, is tested in test_fairness.py)."""
    return Settings(data_dir=tmp_path, database_url=None, broker_url=None, blob_dir=None,
                    dispatch_slots=8)


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    url = settings.resolved_database_url
    Base.metadata.create_all(get_engine(url))
    with get_sessionmaker(url)() as s:
        yield s


@pytest.fixture
def app(settings: Settings) -> Celery:
    return make_celery(settings)


def add_user(session: Session, name: str) -> ApiKey:
    """A user `name` and a key of it (prefix and hash made of the name's first letter)."""
    key = ApiKey(user=User(name=name), name="default", prefix=f"nads_{name[0]}",
                 key_hash=name[0] * 64)
    session.add(key)
    session.commit()
    return key


@pytest.fixture
def alice(session: Session) -> ApiKey:
    return add_user(session, "alice")


def sent_messages(settings: Settings) -> list[Path]:
    """The messages waiting in the embedded broker's queue folder."""
    return sorted((settings.broker_folder / "queue").glob("*.msg"))
