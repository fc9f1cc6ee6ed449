"""Rate limits per API key in any sliding 60 s window, past which a request is refused with 429
and `Retry-After`: job submissions (`NADS_SUBMIT_RATE_PER_MINUTE`), and uploads and uploaded
architectures together (`NADS_UPLOAD_RATE_PER_MINUTE`; each architecture costs a validation).

The state is the tables themselves (the creation times of the jobs submitted with the key,
`jobs.api_key_id`), so the limit holds across any number of API processes, with Postgres or the
embedded SQLite, and needs no extra store. Keys are made by an administrator (`nads admin
create-key`), not by their holders, so a user cannot multiply the budget. The key's row is
locked while counting, so two concurrent submissions cannot both take the last slot; the lock
is released by the commit that stores the job. Postgres: `SELECT ... FOR UPDATE` of the key's
row. SQLite ignores FOR UPDATE (80 concurrent submissions against a limit of 60 were 69
accepted): there a no-op UPDATE of the key's row opens the transaction and takes the database's
write lock first, so the count and the insert of concurrent submissions run one after the
other, across processes too (the busy timeout queues them).
"""

from __future__ import annotations

import math
from datetime import timedelta

from fastapi import Depends, HTTPException, status
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api.deps import CurrentKey, SessionDep, SettingsDep
from store.models import ApiKey, Architecture, Job, Upload, utcnow

WINDOW_S = 60.0


def _lock_key(session: Session, key: ApiKey) -> None:
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(ApiKey).where(ApiKey.id == key.id).values(id=ApiKey.id))
    else:
        session.execute(select(ApiKey.id).where(ApiKey.id == key.id).with_for_update())


def check_rate(session: Session, key: ApiKey, per_minute: int, tables: tuple[type, ...],
               what: str, setting: str, lock: bool = True) -> None:
    """Raises 429 (with Retry-After) when `key` already made `per_minute` rows of `tables` (each
    with `api_key_id` and `created_at`) in the last 60 s; 0 disables the limit. With `lock`,
    call it in the transaction that inserts the row (the key's row stays locked until then)."""
    if per_minute <= 0:
        return
    if lock:
        _lock_key(session, key)
    since = utcnow() - timedelta(seconds=WINDOW_S)
    count, oldest = 0, None
    for table in tables:
        n, first = session.execute(
            select(func.count(), func.min(table.created_at))
            .where(table.api_key_id == key.id, table.created_at > since)
        ).one()
        count += n
        oldest = first if oldest is None or (first is not None and first < oldest) else oldest
    if not lock:  # end the read: on SQLite a read transaction cannot later become a write
        session.rollback()
    if count < per_minute:
        return
    retry_after = max(1, math.ceil(WINDOW_S - (utcnow() - oldest).total_seconds()))
    session.rollback()  # releases the row lock
    raise HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=f"rate limit: {count} {what} with this key in the last {WINDOW_S:.0f} s; the "
               f"limit is {per_minute} per minute ({setting}); retry in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


def check_submission_rate(session: Session, key: ApiKey, per_minute: int) -> None:
    """The job-submission limit; call it in the transaction that inserts the job."""
    check_rate(session, key, per_minute, (Job,), "jobs submitted",
               "NADS_SUBMIT_RATE_PER_MINUTE")


def check_upload_rate(session: Session, key: ApiKey, per_minute: int, lock: bool = True
                      ) -> None:
    """The upload limit (uploads and architectures together). Called twice by the upload
    routes: without the lock before the body is received (no work for a refused request),
    then with it in the transaction that stores the row (exact under concurrency)."""
    check_rate(session, key, per_minute, (Upload, Architecture), "uploads and architectures",
               "NADS_UPLOAD_RATE_PER_MINUTE", lock)


def _enforce(session: SessionDep, key: CurrentKey, settings: SettingsDep) -> None:
    check_submission_rate(session, key, settings.submit_rate_per_minute)


# On every job submission route: `@router.post(..., dependencies=[SUBMIT_RATE])`. The request's
# session is the one the route inserts with, so the row lock lasts until the job is committed.
SUBMIT_RATE = Depends(_enforce)
