"""NAD jobs: the eigenvectors of the covariance of random networks' input gradients
(`nadcore.nads.spec.NADSpec`). Sharded over network indices; sequential (one task) when early
stopping (`target_stability`) is on. Refused before they are stored when the cost estimate
exceeds a quota."""

from __future__ import annotations

from typing import Any

from jobs.budget import measured_seconds
from jobs.kinds.base import (
    SEQUENTIAL,
    SHARDED,
    Admission,
    Figure,
    Items,
    Plan,
    Quota,
    SpecError,
    check_limits,
    counted_layers,
    uploaded_flops,
)
from nadcore.nads.cost import estimate_cost, running_bytes
from nadcore.nads.spec import GRADIENT_BLOCK_LIMIT, NADSpec
from nadcore.specs.layer_counts import LayerCount
from store.settings import Settings

QUOTAS = (
    Quota("forward_passes", "max_forward_passes", 2_000_000_000, "forward passes"),
    # the paper's 10,000 DenseNet-121s: 3.6e16
    Quota("flops", "max_flops", 1e17, "FLOP"),
    Quota("memory_bytes", "max_memory_bytes", 16 * 2**30,
          "bytes of partial results and of one running network"),
)


# The most bytes one frame from the sandbox can declare: its length field is 4 bytes
# (nadcore.uploaded.isolated.HEADER, ">cI"; that module imports torch, so not imported here).
SANDBOX_FRAME_LIMIT = 2**32 - 1


def check_returnable(spec: NADSpec) -> None:
    """SpecError unless each shard of a job on an uploaded architecture can send its result back
    from the sandbox in one frame. Only the moments of a covariance at D = 16,384 (the largest
    the spec allows) from more than 16,384 networks cannot: 2 D^2 float64 are 4 GiB, and the
    job would fail after computing every shard."""
    if spec.representation != "moments":
        return
    moments = 2 * spec.input_dim**2 * 8
    if moments + (1 << 20) > SANDBOX_FRAME_LIMIT:  # with the rest of the shard's .npz
        most = GRADIENT_BLOCK_LIMIT // (4 * spec.input_dim)
        raise SpecError(
            "decomposition", f"a covariance of D = {spec.input_dim:,} from "
            f"{spec.num_networks:,} networks of an uploaded architecture keeps each shard's "
            f"gradients as their moments, {moments / 2**30:.1f} GiB, more than the sandbox can "
            f"return ({SANDBOX_FRAME_LIMIT / 2**30:.0f} GiB); use decomposition lowrank, or at "
            f"most {most:,} networks", spec.decomposition)


def check_quota(spec: NADSpec, settings: Settings,
                arch_info: dict[str, Any] | None = None,
                count: LayerCount | None = None) -> dict[str, Any]:
    """Returns the estimate, or raises `QuotaError` naming the exceeded estimate and its limit.
    `arch_info`: an uploaded architecture's validation info (its FLOPs and parameters);
    `count`: a torchvision builder's forward pass (jobs/architecture_costs.py)."""
    estimate = estimate_cost(spec, count).as_dict()
    if arch_info is not None:
        per_network = estimate["forward_passes"] / spec.num_networks
        estimate["flops_per_network"] = uploaded_flops(arch_info, per_network)
        estimate["flops"] = uploaded_flops(arch_info, estimate["forward_passes"])
        estimate["measured_s"] = measured_seconds(arch_info, estimate["forward_passes"])
        estimate["parameters"] = arch_info.get("num_params")
        estimate["model_bytes"] = running_bytes(spec, estimate["parameters"], None)
        estimate["memory_bytes"] = estimate["result_bytes"] + estimate["model_bytes"]
    check_limits(estimate, QUOTAS, settings, "reduce num_networks or input_shape")
    return estimate


class NADKind:
    name = "nads"
    spec = NADSpec
    title = ("Queues a NAD job: one task per shard and a merge (one task when early "
             "stopping).")
    unit = "networks"
    figures = (
        Figure("preview.png", "The first NADs. Top: pixel space (channel 0), each NAD "
               "divided by its largest |value| (diverging colour map, -1 to 1). Bottom: its "
               "Fourier energy |F|², divided by its largest value, on signed frequency axes "
               "(kx, ky); DC where the cyan marks meet."),
        Figure("spectrum.png", "Eigenvalues of the gradient covariance (log scale) and the "
               "cumulative share of the variance."),
    )
    worker = "worker.kinds.nads"
    items = Items("num_networks", "networks", least=2)  # a NAD job needs two networks
    quotas = QUOTAS
    supports_upload = True
    label = "NAD"
    web_views = ("nad-outcome", "nad-facts", "nad-gallery")
    acceptances: dict[str, str] = {}
    cli_options = {"networks": "num_networks", "method": "method", "scale": "scale",
                   "k": "k", "target-stability": "target_stability",
                   "stability-k": "stability_k"}

    def architecture(self, spec: NADSpec) -> dict[str, Any]:
        return {"networks": spec.num_networks, "outputs": spec.output_index + 1,
                "input_shape": spec.input_shape}

    def plan(self, spec: NADSpec, admission: Admission) -> Plan:
        count = counted_layers(admission, spec.architecture, spec.input_shape,
                               spec.output_index + 1)
        estimate = check_quota(spec, admission.settings, admission.arch_info, count)
        if admission.arch_info is not None:  # an upload: its results come through the sandbox
            check_returnable(spec)
        if spec.target_stability is not None:
            return Plan(SEQUENTIAL, estimate, [(0, spec.num_networks)])
        return Plan(SHARDED, estimate, spec.shard_ranges())


KIND = NADKind()
