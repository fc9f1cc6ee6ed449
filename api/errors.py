"""Validation errors as `{"detail": [...]}` whose messages start with the field they concern."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

_LOCATIONS = {"body", "query", "path", "header"}


def _field(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if p not in _LOCATIONS)


def _plain(ctx: dict | None) -> dict:
    return {k: v for k, v in (ctx or {}).items() if isinstance(v, int | float | str | bool)}


async def validation_handler(_request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = []
    for err in exc.errors():
        field = _field(tuple(err.get("loc", ())))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        # Model-level checks already name their field ("k: 40 exceeds ...").
        if field and not msg.startswith(f"{field}:"):
            msg = f"{field}: {msg}"
        detail.append({"field": field or None, "msg": msg, "type": err.get("type"),
                       "loc": list(err.get("loc", ())), "ctx": _plain(err.get("ctx"))})
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


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(DataError, unstorable_value)
    app.add_exception_handler(PoolTimeout, database_busy)
