"""What the figures call things, read from the database when a merge's inputs are loaded
(worker/inputs.py): an uploaded architecture by the name its owner gave it (not
`uploaded:<id>`), and where a job's NADs come from."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.ownership import own_job
from nadcore.figures import architecture_label
from store.models import Architecture


def given_name(session: Session, architecture: Any) -> str | None:
    """The name the owner gave an uploaded architecture (`{"id": ...}`); None for a built-in
    or once it is deleted."""
    if hasattr(architecture, "model_dump"):
        architecture = architecture.model_dump(mode="json")
    if not isinstance(architecture, dict):
        return None
    return session.scalar(select(Architecture.name).where(Architecture.id == architecture["id"]))


def architecture_name(session: Session, architecture: Any) -> str:
    """A built-in's name; an uploaded architecture's user-given name (`architecture_label`)."""
    if hasattr(architecture, "model_dump"):
        architecture = architecture.model_dump(mode="json")
    return architecture_label(architecture, given_name(session, architecture))


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
