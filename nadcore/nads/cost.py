"""What a NAD spec costs, before running it (no torch: the API refuses absurd specs with it).

FLOPs count the multiply-adds of convolutions and linear layers (2 FLOPs each), walked
analytically through the built-in architectures; torchvision models report None here (a
worker counts them with torch, nadcore.networks.counting, and the service passes the count in). An
autograd gradient costs about three forward passes.

Memory counts the partial results held for the merge plus what one network needs while it runs:
its parameters twice (the network and the template it is drawn from), the inputs of one
finite-difference pair, and the activations (outputs of the convolutions and linear layers) of
those inputs (three times one input's for autograd: forward, and backward through them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from nadcore.nads.spec import NADSpec
from nadcore.specs.layer_counts import LayerCount, layer_count


@dataclass(frozen=True)
class CostEstimate:
    forward_passes: int  # forward-pass equivalents over all networks
    flops: float | None  # total FLOPs, None when unknown without torch
    flops_per_network: float | None
    parameters: int | None  # per network
    memory_bytes: int  # results held for the merge (gradients or moments) + model_bytes
    result_bytes: int = 0  # the partial results alone
    model_bytes: int = 0  # one running network: parameters, inputs and activations
    activation_floats: int | None = None  # per input, None when unknown

    def as_dict(self) -> dict:
        return asdict(self)


def estimate_cost(spec: NADSpec, count: LayerCount | None = None) -> CostEstimate:
    """Forward passes, FLOPs and result memory of a spec, without running anything. `count`:
    one forward pass, counted elsewhere (a torchvision builder: nadcore.networks.counting); by
    default the walk of a built-in."""
    d, n = spec.input_dim, spec.num_networks
    per_network = 2 * d if spec.method == "finite_difference" else 3
    if count is None:
        count = layer_count(spec.architecture, spec.input_shape, spec.output_index + 1)
    flops_net = None if count is None else 2.0 * count.macs * per_network
    grad_bytes = n * d * 4
    results = grad_bytes if grad_bytes <= (1 << 30) or spec.uses_lowrank else 2 * d * d * 8 * 2
    params = None if count is None else count.params
    acts = None if count is None else count.activations
    model = running_bytes(spec, params, acts)
    return CostEstimate(
        forward_passes=n * per_network,
        flops=None if flops_net is None else flops_net * n,
        flops_per_network=flops_net,
        parameters=params,
        memory_bytes=results + model,
        result_bytes=results,
        model_bytes=model,
        activation_floats=acts,
    )


def running_bytes(spec: NADSpec, parameters: int | None, activations: int | None) -> int:
    """Bytes one network needs while it runs (float32): its parameters and the template's,
    one finite-difference pair of inputs (or one input and its gradient), and the activations of
    those inputs (autograd: forward and backward, three times one input's). Unknown parts
    (torchvision models, without torch) count as zero."""
    inputs = 2
    per_input = 2 if spec.method == "finite_difference" else 3
    return 4 * (2 * (parameters or 0) + inputs * spec.input_dim
                + per_input * (activations or 0))
