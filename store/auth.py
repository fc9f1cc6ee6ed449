"""API keys: random tokens shown once, stored as sha256."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from store.models import ApiKey, User

KEY_PREFIX = "nads_"
# The system user that owns the catalog's build jobs: no key may be made for it, or its holder
# would see (and could cancel) the catalog's jobs.
CATALOG_USER = "catalog"
RESERVED_USERS = frozenset({CATALOG_USER})


class ReservedUserError(ValueError):
    """A key was asked for a system user."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, user_name: str, key_name: str = "default") -> str:
    """Creates the user if needed and a new key for it; returns the key (not stored)."""
    if user_name in RESERVED_USERS:
        raise ReservedUserError(f"name: {user_name!r} is a system user of the service; "
                                "choose another name")
    user = session.scalar(select(User).where(User.name == user_name))
    if user is None:
        user = User(name=user_name)
        session.add(user)
        session.flush()
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(user_id=user.id, name=key_name, prefix=key[:12], key_hash=hash_key(key)))
    session.flush()
    return key


def find_key(session: Session, key: str) -> ApiKey | None:
    """The unrevoked key row of `key` (its user loaded), or None."""
    return session.scalar(
        select(ApiKey).options(joinedload(ApiKey.user))
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )


def user_for_key(session: Session, key: str) -> User | None:
    row = find_key(session, key)
    return row.user if row is not None else None
