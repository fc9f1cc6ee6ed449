"""Engines and sessions. SQLite (embedded) gets WAL and a busy timeout: API and worker share it.

Fork safety: a forked child (Celery's prefork pool starts and replaces its children from a main
process that itself uses the database, e.g. for the worker's heartbeat) must never reuse a
connection of its parent, or both processes talk over one socket ("can't change 'autocommit'
now: connection in transaction status INTRANS"). After every fork, the child's engines forget
their inherited connections without closing them (SQLAlchemy's `dispose(close=False)`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def ensure_sqlite_dir(url: str) -> None:
    """SQLite creates its file but not the directory it lives in."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


_ENGINES: list[Engine] = []


def _forget_inherited_connections() -> None:
    for engine in _ENGINES:
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_inherited_connections)


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One engine per URL and process."""
    if url.startswith("sqlite"):
        ensure_sqlite_dir(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    _ENGINES.append(engine)
    return engine


@lru_cache(maxsize=8)
def get_sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
