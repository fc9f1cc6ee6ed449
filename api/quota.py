"""Quotas: a spec whose cost estimate exceeds a configured limit is refused before it is stored."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status

from nadcore.cost import estimate_cost
from nadcore.spec import NADSpec
from store.settings import Settings

_ENV = {"forward_passes": "NADS_MAX_FORWARD_PASSES", "flops": "NADS_MAX_FLOPS",
        "memory_bytes": "NADS_MAX_MEMORY_BYTES"}


def check_quota(spec: NADSpec, settings: Settings) -> dict[str, Any]:
    """Returns the estimate, or raises 422 naming the exceeded estimate and its limit."""
    estimate = estimate_cost(spec).as_dict()
    over = []
    for name, limit in settings.quotas().items():
        value = estimate.get(name)
        if limit and value is not None and value > limit:
            over.append(f"estimated {name} {value:,.0f} exceeds the limit {limit:,.0f} "
                        f"({_ENV[name]})")
    if over:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail={"msg": "spec exceeds the quota: " + "; ".join(over) +
                    "; reduce num_networks or input_shape",
                    "estimate": estimate, "limits": settings.quotas()},
        )
    return estimate
