"""Validation errors as `{"detail": [...]}` whose messages start with the field they concern,
and the domain's refusals (jobs/) mapped to HTTP, all here: `SpecError` and an ambiguous id
prefix are 422s in pydantic's shape; an estimate over a quota or past the run-time limit a 422
with the estimate and what fits.

An error echoes at most a short excerpt of what the client sent: a 30 MB string in a field (or
as a field's name) comes back as its first characters and its length, never whole.
"""

from __future__ import annotations

import re

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.validation import invalid
from jobs.errors import SpecError
from jobs.fleet import TooLong
from jobs.kinds.base import QuotaError
from jobs.ownership import AmbiguousReference

_LOCATIONS = {"body", "query", "path", "header"}
EXCERPT_CHARS = 80  # of one echoed value
MAX_MESSAGE_CHARS = 1000  # of one message, whatever built it


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """repr of `value`, cut to `limit` characters with the full length said when longer."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _field(loc: tuple) -> str:
    return ".".join(_cut(str(p), EXCERPT_CHARS) for p in loc if p not in _LOCATIONS)


def _plain(ctx: dict | None) -> dict:
    return {k: _cut(v, EXCERPT_CHARS) if isinstance(v, str) else v
            for k, v in (ctx or {}).items() if isinstance(v, int | float | str | bool)}


# A message that already starts with the field(s) it concerns: "k: 40 exceeds ...",
# "training.mean, training.std: give both ...".
_NAMED = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)*)(?:, [A-Za-z_]\w*(?:\.\w+)*)*: ")


def _within(a: str, b: str) -> bool:
    """`a` and `b` are dotted paths in the same top-level field: "directions.stop" as the
    message names it, "directions.nad" as pydantic locates the check of a tagged union (at the
    tag), "directions" for a check of the whole object."""
    return a.split(".", 1)[0] == b.split(".", 1)[0]


def field_and_message(loc: tuple, msg: str, kind: str | None = None,
                      ctx: dict | None = None) -> tuple[str, str]:
    """The field an error concerns and its message, which starts with it exactly once.

    The location gives the field, unless the message already names it (a model-level check
    has no location of its own; a nested one is located at its parent or, in a tagged union,
    at the tag): then the message's own name stands, and it is not named again."""
    field = _field(loc)
    msg = msg.removeprefix("Value error, ")
    if kind == "json_invalid":  # located at (body, character offset)
        at = next((p for p in loc if isinstance(p, int)), None)
        why = (ctx or {}).get("error")
        return "body", (f"body: not valid JSON{f' at character {at}' if at is not None else ''}"
                        f"{f' ({why})' if why else ''}")
    named = _NAMED.match(msg)
    if named and (not field or _within(named.group(1), field)):
        return named.group(1), msg
    if named and field.endswith(f".{named.group(1)}"):  # a nested model's own name for it
        return field, f"{field}{msg[len(named.group(1)):]}"
    return field, (f"{field}: {msg}" if field else msg)


async def validation_handler(_request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = []
    for err in exc.errors():
        field, msg = field_and_message(tuple(err.get("loc", ())), str(err.get("msg", "")),
                                       err.get("type"), err.get("ctx"))
        loc = [p if isinstance(p, int) else _cut(str(p), EXCERPT_CHARS)
               for p in err.get("loc", ())]
        detail.append({"field": field or None, "msg": _cut(msg, MAX_MESSAGE_CHARS),
                       "type": err.get("type"), "loc": loc, "ctx": _plain(err.get("ctx"))})
    return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                        content={"detail": detail})


async def database_unavailable(_request: Request, exc: OperationalError) -> JSONResponse:
    """The database is down or restarting: 503 with Retry-After, not a 500 (jobs are safe in
    it; the client should simply ask again)."""
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": f"database unavailable ({type(exc.orig).__name__}); retry shortly"},
        headers={"Retry-After": "5"},
    )


async def database_busy(_request: Request, _exc: PoolTimeout) -> JSONResponse:
    """Every pooled connection stayed busy for the pool's timeout: overload, not a bug."""
    return JSONResponse(status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                        content={"detail": "database busy (no free connection); retry shortly"},
                        headers={"Retry-After": "2"})


async def unstorable_value(_request: Request, exc: DataError) -> JSONResponse:
    """A value the database cannot hold or compare (a NUL byte in an id, say): the client's
    input, so 422, not a 500."""
    reason = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
    return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                        content={"detail": f"request: a value the database refuses: {reason}"})


async def short_http_error(request: Request, exc: HTTPException) -> Response:
    """FastAPI's own handler, with a string detail cut to MAX_MESSAGE_CHARS (a 404 naming an
    id from the path, a 422 naming a query value)."""
    if isinstance(exc.detail, str) and len(exc.detail) > MAX_MESSAGE_CHARS:
        exc = HTTPException(exc.status_code, _cut(exc.detail, MAX_MESSAGE_CHARS), exc.headers)
    return await http_exception_handler(request, exc)


async def spec_refused(request: Request, exc: Exception) -> JSONResponse:
    """A spec the domain refused (`SpecError`, `AmbiguousReference`): 422 naming the field."""
    assert isinstance(exc, SpecError | AmbiguousReference)
    return await validation_handler(request, invalid(exc.field, exc.reason, exc.value))


async def over_quota(_request: Request, exc: QuotaError) -> JSONResponse:
    return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                        content={"detail": {"msg": str(exc), "estimate": exc.estimate,
                                            "limits": exc.limits}})


async def too_long(_request: Request, exc: TooLong) -> JSONResponse:
    return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                        content={"detail": {"msg": str(exc), "estimate": exc.estimate,
                                            "run": exc.run, "fits": exc.fits}})


def install(app: FastAPI) -> None:
    app.add_exception_handler(SpecError, spec_refused)
    app.add_exception_handler(AmbiguousReference, spec_refused)
    app.add_exception_handler(QuotaError, over_quota)
    app.add_exception_handler(TooLong, too_long)
    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_exception_handler(HTTPException, short_http_error)
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(DataError, unstorable_value)
    app.add_exception_handler(PoolTimeout, database_busy)
