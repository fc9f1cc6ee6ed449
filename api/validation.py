"""422s in pydantic's shape whose message starts with the field (the API's answer to a domain
`SpecError` too: api/errors.py)."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError


def invalid(field: str, message: str, value: Any = None) -> RequestValidationError:
    """A 422 in the same shape as pydantic's: one entry whose `msg` starts with the field."""
    loc = ("body", *field.split("."))
    return RequestValidationError([{"loc": loc, "msg": f"{field}: {message}",
                                    "type": "value_error", "input": value}])
