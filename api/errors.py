"""Validation errors as `{"detail": [...]}` whose messages start with the field they concern."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_handler)
