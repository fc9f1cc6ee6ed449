"""Rate limit of job submission: at most `NADS_SUBMIT_RATE_PER_MINUTE` jobs per user in any
sliding 60 s window, past which a submission is refused with 429 and `Retry-After`.

The state is the jobs table itself (the creation times of the user's recent jobs), so the limit
holds across any number of API processes, with Postgres or the embedded SQLite, and needs no
extra store. Every key of a user draws on the same budget: minting more keys does not multiply
it. The user's row is locked (`SELECT ... FOR UPDATE` on Postgres) while counting, so two
concurrent submissions cannot both take the last slot; the lock is released by the commit that
stores the job.
"""

from __future__ import annotations

import math
from datetime import timedelta

from fastapi import Depends, HTTPException, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.deps import CurrentUser, SessionDep, SettingsDep
from store.models import Job, User, utcnow

WINDOW_S = 60.0


def check_submission_rate(session: Session, user: User, per_minute: int) -> None:
    """Raises 429 (with Retry-After) when `user` already submitted `per_minute` jobs in the last
    60 s; 0 disables the limit. Call it in the transaction that inserts the job."""
    if per_minute <= 0:
        return
    session.execute(select(User.id).where(User.id == user.id).with_for_update())
    since = utcnow() - timedelta(seconds=WINDOW_S)
    count, oldest = session.execute(
        select(func.count(Job.pk), func.min(Job.created_at))
        .where(Job.user_id == user.id, Job.created_at > since)
    ).one()
    if count < per_minute:
        return
    retry_after = max(1, math.ceil(WINDOW_S - (utcnow() - oldest).total_seconds()))
    session.rollback()  # releases the row lock
    raise HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=f"rate limit: {count} jobs submitted in the last {WINDOW_S:.0f} s; the limit is "
               f"{per_minute} per minute (NADS_SUBMIT_RATE_PER_MINUTE); retry in "
               f"{retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


def _enforce(session: SessionDep, user: CurrentUser, settings: SettingsDep) -> None:
    check_submission_rate(session, user, settings.submit_rate_per_minute)


# On every job submission route: `@router.post(..., dependencies=[SUBMIT_RATE])`. The request's
# session is the one the route inserts with, so the row lock lasts until the job is committed.
SUBMIT_RATE = Depends(_enforce)
