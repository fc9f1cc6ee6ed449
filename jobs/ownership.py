"""A user's rows. Every read of a job, upload or architecture on behalf of a user goes through
here, so "another user's row reads exactly like a missing one" holds in one place.

Ids are 32 hex digits (uuid4().hex); people type the first 8 the CLI prints. `find_own` takes
a whole id or, like git, any unique prefix of at least MIN_PREFIX hex digits: only the user's
own rows are candidates, so a prefix never tells whether another user's id starts with it.
`resolve_references` rewrites the ids a job spec names into whole ones before it is stored.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from store.models import Architecture, Job, Upload

ID_CHARS = 32
MIN_PREFIX = 4
LISTED = 5  # ids named in an ambiguity
_PREFIX = re.compile(rf"[0-9a-f]{{{MIN_PREFIX},{ID_CHARS - 1}}}")
Row = TypeVar("Row", Job, Upload, Architecture)
WHAT = {Job: "job", Upload: "upload", Architecture: "architecture"}


class AmbiguousId(LookupError):
    """A prefix that starts several of the user's ids; the message (without a field) names the
    first LISTED of them and asks for more characters."""

    def __init__(self, what: str, given: str, matches: list[str]) -> None:
        self.given, self.matches = given, matches
        listed = ", ".join(matches[:LISTED]) + (", ..." if len(matches) > LISTED else "")
        many = f"{len(matches)}" if len(matches) <= LISTED else f"more than {LISTED}"
        super().__init__(f"{given!r} is the start of {many} of your {what}s ({listed}); give "
                         "more characters")


def find_own(session: Session, model: type[Row], user_id: int, given: str) -> Row | None:
    """The user's row whose id is `given`, or whose id alone among the user's starts with it
    (MIN_PREFIX to ID_CHARS - 1 lowercase hex digits); None when there is none (another
    user's included); AmbiguousId when several of the user's start with it."""
    row = session.scalar(select(model).where(model.id == given, model.user_id == user_id))
    if row is not None or not _PREFIX.fullmatch(given):
        return row
    rows = session.scalars(select(model).where(model.user_id == user_id,
                                               model.id.startswith(given, autoescape=True))
                           .order_by(model.id).limit(LISTED + 1)).all()
    if len(rows) > 1:
        raise AmbiguousId(WHAT[model], given, [r.id for r in rows])
    return rows[0] if rows else None


def not_found(model: type[Row], given: str, shown: str | None = None) -> str:
    """Why `given` (shown as `shown`: e.g. cut when long) names none of the user's rows
    (without a field)."""
    short = (f" (an id prefix needs at least {MIN_PREFIX} characters)"
             if len(given) < MIN_PREFIX else "")
    return f"{WHAT[model]} {shown or repr(given)} not found{short}"


def own_job(session: Session, user_id: int, job_id: str) -> Job | None:
    """The user's job `job_id`; None for a missing job and for another user's."""
    return session.scalar(select(Job).where(Job.id == job_id, Job.user_id == user_id))


def own_jobs(user_id: int) -> Select[tuple[Job]]:
    """The query of the user's jobs (the caller adds filters, order and paging)."""
    return select(Job).where(Job.user_id == user_id)


def own_upload(session: Session, user_id: int, upload_id: str) -> Upload | None:
    """The user's upload `upload_id`; None for a missing upload and for another user's."""
    return session.scalar(select(Upload).where(Upload.id == upload_id,
                                               Upload.user_id == user_id))


def own_architecture(session: Session, user_id: int, architecture_id: str
                     ) -> Architecture | None:
    """The user's architecture `architecture_id`; None for a missing one and another user's."""
    return session.scalar(select(Architecture).where(Architecture.id == architecture_id,
                                                     Architecture.user_id == user_id))


# The fields of a job spec that name one of the user's rows (kinds without them skip them).
REFERENCES: tuple[tuple[str, str, type], ...] = (
    ("architecture", "id", Architecture), ("directions", "job", Job), ("nads", "job", Job),
    ("nads", "upload", Upload), ("dataset", "upload", Upload))


class AmbiguousReference(LookupError):
    """An ambiguous id prefix in a spec field (`field`: dotted)."""

    def __init__(self, field: str, value: str, reason: str) -> None:
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"{field}: {reason}")


SpecT = TypeVar("SpecT", bound=BaseModel)


def resolve_references(session: Session, user_id: int, spec: SpecT) -> SpecT:
    """The spec with each id prefix it names (REFERENCES) replaced by the whole id of the
    user's row it starts; ids that name nothing are left for the kind's own checks to refuse
    (they say what the field needs). AmbiguousReference for an ambiguous prefix."""
    for parent_name, name, model in REFERENCES:
        parent = getattr(spec, parent_name, None)
        given = getattr(parent, name, None)
        if not isinstance(given, str) or not isinstance(parent, BaseModel):
            continue
        try:
            row = find_own(session, model, user_id, given)
        except AmbiguousId as exc:
            raise AmbiguousReference(f"{parent_name}.{name}", given, str(exc)) from None
        if row is not None and row.id != given:
            update: dict[str, Any] = {name: row.id}
            spec = spec.model_copy(update={parent_name: parent.model_copy(update=update)})
    return spec
