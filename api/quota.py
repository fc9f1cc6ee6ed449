"""Quotas: a spec whose cost estimate exceeds a configured limit is refused before it is stored."""

from __future__ import annotations

from typing import Any

from api.architectures import custom_flops
from api.validation import check_limits
from nadcore.cost import estimate_cost, running_bytes
from nadcore.spec import NADSpec
from store.settings import Settings

_ENV = {"forward_passes": "NADS_MAX_FORWARD_PASSES", "flops": "NADS_MAX_FLOPS",
        "memory_bytes": "NADS_MAX_MEMORY_BYTES"}
_WHAT = {"forward_passes": "forward passes", "flops": "FLOP",
         "memory_bytes": "bytes of partial results and of one running network"}


def check_quota(spec: NADSpec, settings: Settings,
                arch_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Returns the estimate, or raises 422 naming the exceeded estimate and its limit.
    `arch_info`: an uploaded architecture's validation info (its FLOPs and parameters)."""
    estimate = estimate_cost(spec).as_dict()
    if arch_info is not None:
        per_network = estimate["forward_passes"] / spec.num_networks
        estimate["flops_per_network"] = custom_flops(arch_info, per_network)
        estimate["flops"] = custom_flops(arch_info, estimate["forward_passes"])
        estimate["parameters"] = arch_info.get("num_params")
        estimate["model_bytes"] = running_bytes(spec, estimate["parameters"], None)
        estimate["memory_bytes"] = estimate["result_bytes"] + estimate["model_bytes"]
    check_limits(estimate, settings.quotas(), _ENV, _WHAT, "reduce num_networks or input_shape")
    return estimate
