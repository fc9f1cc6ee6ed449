"""The caller's row named in a path (`/v1/jobs/{job_id}`, ...): its whole id or a unique prefix
(jobs/ownership.py). 404 when it names none of the caller's (another user's included), 409
when it starts several of them; each message starts with the path parameter's name."""

from __future__ import annotations

from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from api.errors import excerpt
from jobs.ownership import AmbiguousId, Row, find_own, not_found
from store.models import User


def get_own(session: Session, model: type[Row], user: User, given: str, field: str) -> Row:
    try:
        row = find_own(session, model, user.id, given)
    except AmbiguousId as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"{field}: {exc}") from None
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"{field}: {not_found(model, given, excerpt(given))}")
    return row
