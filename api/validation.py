"""Shared by the job kinds on the API side: 422s in pydantic's shape whose message starts with
the field, quota refusals naming the estimate and the limit, and contiguous shard ranges."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError


def invalid(field: str, message: str, value: Any = None) -> RequestValidationError:
    """A 422 in the same shape as pydantic's: one entry whose `msg` starts with the field."""
    loc = ("body", *field.split("."))
    return RequestValidationError([{"loc": loc, "msg": f"{field}: {message}",
                                    "type": "value_error", "input": value}])


def shard_ranges(count: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous index ranges [start, stop) of `count` items, as `NADSpec.shard_ranges` splits."""
    bounds = [round(i * count / shards) for i in range(shards + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(shards)]


def check_limits(estimate: Mapping[str, Any], limits: Mapping[str, float],
                 env: Mapping[str, str], what: Mapping[str, str], advice: str) -> None:
    """Raises 422 naming every estimate over its limit (0 = no limit), with
    `detail.estimate` and `detail.limits`."""
    over = []
    for name, limit in limits.items():
        value = estimate.get(name)
        if limit and value is not None and value > limit:
            over.append(f"estimated {name} {value:,.0f} ({what[name]}) exceeds the limit "
                        f"{limit:,.0f} ({env[name]})")
    if over:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail={"msg": "spec exceeds the quota: " + "; ".join(over) + "; " + advice,
                    "estimate": dict(estimate), "limits": dict(limits)},
        )
