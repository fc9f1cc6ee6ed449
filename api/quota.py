"""Quotas: a spec whose cost estimate exceeds a configured limit is refused before it is stored."""

from __future__ import annotations

from typing import Any

from api.validation import check_limits
from nadcore.cost import estimate_cost
from nadcore.spec import NADSpec
from store.settings import Settings

_ENV = {"forward_passes": "NADS_MAX_FORWARD_PASSES", "flops": "NADS_MAX_FLOPS",
        "memory_bytes": "NADS_MAX_MEMORY_BYTES"}
_WHAT = {"forward_passes": "forward passes", "flops": "FLOP",
         "memory_bytes": "bytes of partial results"}


def check_quota(spec: NADSpec, settings: Settings) -> dict[str, Any]:
    """Returns the estimate, or raises 422 naming the exceeded estimate and its limit."""
    estimate = estimate_cost(spec).as_dict()
    check_limits(estimate, settings.quotas(), _ENV, _WHAT, "reduce num_networks or input_shape")
    return estimate
