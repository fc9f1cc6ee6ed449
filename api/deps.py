"""Dependencies injected into the routes: settings, a database session, the current user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, TypeVar

from celery import Celery
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from store.auth import find_key
from store.blobs import Blobs
from store.db import get_sessionmaker
from store.models import ApiKey, User
from store.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


def get_blobs(request: Request) -> Blobs:
    return request.app.state.blobs


SettingsDep = Annotated[Settings, Depends(get_settings)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
BlobsDep = Annotated[Blobs, Depends(get_blobs)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    session = get_sessionmaker(settings.resolved_database_url)()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]

MISSING_KEY = "Authorization: missing API key; send 'Authorization: Bearer <key>'"
UNKNOWN_KEY = "Authorization: unknown or revoked API key"
_bearer = HTTPBearer(auto_error=False, description="An API key from `nads admin create-key`.")


def get_current_key(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The caller's API key row (with its user); 401 without a valid key."""
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=MISSING_KEY,
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = find_key(session, credentials.credentials)
    # End the read transaction: its connection goes back to the pool while the request waits
    # for a worker thread to run the route. Held across that wait, 100 concurrent requests
    # deadlocked the 40 threads against the 10 connections until the pool timed out (500s).
    session.commit()
    if key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=UNKNOWN_KEY,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return key


CurrentKey = Annotated[ApiKey, Depends(get_current_key)]


def get_current_user(key: CurrentKey) -> User:
    return key.user


CurrentUser = Annotated[User, Depends(get_current_user)]

_T = TypeVar("_T")


def released(session: Session, value: _T) -> _T:
    """Returns `value` after giving the session's connection back to the pool.

    A sync route's return value is validated in one more worker-thread hop; a connection held
    across it (until the dependency's teardown) lets concurrent requests deadlock the thread
    pool against the connection pool. Build the response from the rows, then return it through
    this."""
    session.close()
    return value
