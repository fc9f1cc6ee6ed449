"""What the figures call things: an uploaded architecture by the name its owner gave it (not
`custom:<id>`), and where a job's NADs come from, read from the database when a merge renders
its figures."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.ownership import own_job
from nadcore.figures import architecture_label
from store.db import session_scope
from store.models import Architecture
from worker.kinds.base import db_url


def _given_name(session: Session, architecture: dict) -> str | None:
    return session.scalar(select(Architecture.name).where(Architecture.id == architecture["id"]))


def architecture_name(session: Session, architecture: Any) -> str:
    """A built-in's name; an uploaded architecture's user-given name (`architecture_label`)."""
    if hasattr(architecture, "model_dump"):
        architecture = architecture.model_dump(mode="json")
    if not isinstance(architecture, dict):
        return str(architecture)
    return architecture_label(architecture, _given_name(session, architecture))


def given_name(architecture: dict) -> str | None:
    """The name the owner gave an uploaded architecture; None once it is deleted."""
    with session_scope(db_url()) as session:
        return _given_name(session, architecture)


def nad_source(session: Session, user_id: int, source: Any) -> str | None:
    """What a figure says the NADs are: "the catalog's lenet", "job <id> (lenet 1x32x32, 2000
    networks)", "an uploaded NAD array"; None when there is nothing to say."""
    if getattr(source, "catalog", None):
        return f"the catalog's {source.catalog}"
    if getattr(source, "upload", None):
        return "an uploaded NAD array"
    job_id = getattr(source, "job", None)
    job = own_job(session, user_id, job_id) if job_id else None
    if job is None:
        return None
    spec = job.spec or {}
    shape = "x".join(str(v) for v in spec.get("input_shape") or [])
    networks = spec.get("num_networks")
    detail = ", ".join(v for v in (f"{architecture_name(session, spec.get('architecture'))} "
                                   f"{shape}".strip(),
                                   f"{networks} networks" if networks else "") if v)
    return f"job {job.id[:8]} ({detail})"


def names(user_id: int, architecture: Any, source: Any = None) -> tuple[str, str | None]:
    """(architecture name, NAD source) of a job, in one session."""
    with session_scope(db_url()) as session:
        return (architecture_name(session, architecture),
                None if source is None else nad_source(session, user_id, source))
