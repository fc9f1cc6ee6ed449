"""Rate limits per API key in any sliding 60 s window, past which a request is refused with 429
and `Retry-After`: job submissions (`NADS_SUBMIT_RATE_PER_MINUTE`), and upload requests, of
files and uploaded architectures together (`NADS_UPLOAD_RATE_PER_MINUTE`; each architecture
costs a validation), stored or refused: a refused upload cost the service its transfer, its
temporary file and its checks as much as a stored one.

The state is in the database (the creation times of the jobs submitted with the key,
`jobs.api_key_id`; one `upload_attempts` row per upload request, written before its body is
read), so the limit holds across any number of API processes, with Postgres or the embedded
SQLite, and needs no extra store. Keys are made by an administrator (`nads admin
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
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from api.deps import CurrentKey, SessionDep, SettingsDep
from store.models import ApiKey, Job, UploadAttempt, utcnow

WINDOW_S = 60.0


def _lock_key(session: Session, key: ApiKey) -> None:
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(ApiKey).where(ApiKey.id == key.id).values(id=ApiKey.id))
    else:
        session.execute(select(ApiKey.id).where(ApiKey.id == key.id).with_for_update())


def check_rate(session: Session, key: ApiKey, per_minute: int, table: type, what: str,
               setting: str) -> None:
    """Raises 429 (with Retry-After) when `key` already made `per_minute` rows of `table` (with
    `api_key_id` and `created_at`) in the last 60 s; 0 disables the limit. Call it in the
    transaction that inserts the row: the key's row stays locked until then."""
    if per_minute <= 0:
        return
    _lock_key(session, key)
    since = utcnow() - timedelta(seconds=WINDOW_S)
    count, oldest = session.execute(
        select(func.count(), func.min(table.created_at))
        .where(table.api_key_id == key.id, table.created_at > since)
    ).one()
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
    check_rate(session, key, per_minute, Job, "jobs submitted",
               "NADS_SUBMIT_RATE_PER_MINUTE")


def count_upload_attempt(session: Session, key: ApiKey, per_minute: int,
                         what: str = "upload requests (stored or refused)") -> None:
    """The upload limit, before the body is received: 429 when the key already sent
    `per_minute` upload requests in the last 60 s, else records this one (whatever becomes of
    it) and commits. Counting and recording under the key's lock makes the limit exact under
    concurrency; the key's records older than the window are deleted on the way."""
    if per_minute <= 0:
        return
    check_rate(session, key, per_minute, UploadAttempt, what, "NADS_UPLOAD_RATE_PER_MINUTE")
    session.execute(delete(UploadAttempt).where(
        UploadAttempt.api_key_id == key.id,
        UploadAttempt.created_at <= utcnow() - timedelta(seconds=WINDOW_S)))
    session.add(UploadAttempt(api_key_id=key.id))
    session.commit()


def _enforce(session: SessionDep, key: CurrentKey, settings: SettingsDep) -> None:
    check_submission_rate(session, key, settings.submit_rate_per_minute)


# On every job submission route: `@router.post(..., dependencies=[SUBMIT_RATE])`. The request's
# session is the one the route inserts with, so the row lock lasts until the job is committed.
SUBMIT_RATE = Depends(_enforce)
