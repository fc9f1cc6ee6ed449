"""Rate limit of job submission: at most `NADS_SUBMIT_RATE_PER_MINUTE` jobs per API key in any
sliding 60 s window, past which a submission is refused with 429 and `Retry-After`.

The state is the jobs table itself (the creation times of the jobs submitted with the key,
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
from store.models import ApiKey, Job, utcnow

WINDOW_S = 60.0


def check_submission_rate(session: Session, key: ApiKey, per_minute: int) -> None:
    """Raises 429 (with Retry-After) when `key` already submitted `per_minute` jobs in the last
    60 s; 0 disables the limit. Call it in the transaction that inserts the job."""
    if per_minute <= 0:
        return
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(ApiKey).where(ApiKey.id == key.id).values(id=ApiKey.id))
    else:
        session.execute(select(ApiKey.id).where(ApiKey.id == key.id).with_for_update())
    since = utcnow() - timedelta(seconds=WINDOW_S)
    count, oldest = session.execute(
        select(func.count(Job.pk), func.min(Job.created_at))
        .where(Job.api_key_id == key.id, Job.created_at > since)
    ).one()
    if count < per_minute:
        return
    retry_after = max(1, math.ceil(WINDOW_S - (utcnow() - oldest).total_seconds()))
    session.rollback()  # releases the row lock
    raise HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=f"rate limit: {count} jobs submitted with this key in the last "
               f"{WINDOW_S:.0f} s; the limit is {per_minute} per minute "
               f"(NADS_SUBMIT_RATE_PER_MINUTE); retry in {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


def _enforce(session: SessionDep, key: CurrentKey, settings: SettingsDep) -> None:
    check_submission_rate(session, key, settings.submit_rate_per_minute)


# On every job submission route: `@router.post(..., dependencies=[SUBMIT_RATE])`. The request's
# session is the one the route inserts with, so the row lock lasts until the job is committed.
SUBMIT_RATE = Depends(_enforce)
