"""What a NAD spec costs, before running it (no torch: the API refuses absurd specs with it).

FLOPs count the multiply-adds of convolutions and linear layers (2 FLOPs each), walked
analytically through the built-in architectures; torchvision models report None here (a
worker counts them with torch, nadcore.counting, and the service passes the count in). An
autograd gradient costs about three forward passes.

Memory counts the partial results held for the merge plus what one network needs while it runs:
its parameters twice (the network and the template it is drawn from), the inputs of one
finite-difference pair, and the activations (outputs of the convolutions and linear layers) of
those inputs (three times one input's for autograd: forward, and backward through them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .spec import ArchitectureRef, NADSpec


@dataclass(frozen=True)
class LayerCount:
    macs: int
    params: int
    activations: int = 0  # floats per input: outputs of the convolutions and linear layers


def _walk_lenet(c: int, h: int, w: int, m: int) -> LayerCount | None:
    macs = params = 0
    h, w = h - 4, w - 4
    macs += 6 * h * w * c * 25
    params += 6 * c * 25 + 6
    acts = 6 * h * w
    h, w = h // 2 - 4, w // 2 - 4
    if h < 1 or w < 1:
        return None
    macs += 16 * h * w * 6 * 25
    params += 16 * 6 * 25 + 16
    acts += 16 * h * w
    flat = 16 * (h // 2) * (w // 2)
    if flat < 1:
        return None
    for i, o in ((flat, 120), (120, 84), (84, m)):
        macs += i * o
        params += i * o + o
        acts += o
    return LayerCount(macs, params, acts)


def _walk_vgg11(c: int, h: int, w: int, m: int) -> LayerCount | None:
    macs = params = acts = 0
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if v == "M":
            h, w = h // 2, w // 2
            continue
        macs += v * h * w * c * 9
        params += v * c * 9 + v + 2 * v
        acts += v * h * w
        c = v
    if h < 1 or w < 1:
        return None
    for i, o in ((512 * h * w, 512), (512, 512), (512, m)):
        macs += i * o
        params += i * o + o
        acts += o
    return LayerCount(macs, params, acts)


def _walk_resnet18(c: int, h: int, w: int, m: int) -> LayerCount | None:
    macs = 64 * h * w * c * 9
    params = 64 * c * 9 + 2 * 64
    acts = 64 * h * w
    planes_in = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block_stride in (stride, 1):
            ho, wo = (h - 1) // block_stride + 1, (w - 1) // block_stride + 1
            macs += planes * ho * wo * planes_in * 9 + planes * ho * wo * planes * 9
            params += planes * planes_in * 9 + planes * planes * 9 + 4 * planes
            acts += 2 * planes * ho * wo
            if block_stride != 1 or planes_in != planes:
                macs += planes * ho * wo * planes_in
                params += planes * planes_in + 2 * planes
                acts += planes * ho * wo
            h, w, planes_in = ho, wo, planes
    h, w = h // 4, w // 4
    if h < 1 or w < 1:
        return None
    macs += 512 * h * w * m
    params += 512 * h * w * m + m
    return LayerCount(macs, params, acts + m)


def _walk_densenet121(c: int, h: int, w: int, m: int) -> LayerCount | None:
    growth = 32
    planes = 2 * growth
    macs = planes * h * w * c * 9
    params = planes * c * 9
    acts = planes * h * w
    blocks = (6, 12, 24, 16)
    for i, n in enumerate(blocks):
        for _ in range(n):
            macs += 4 * growth * h * w * planes + growth * h * w * 4 * growth * 9
            params += 2 * planes + 4 * growth * planes + 2 * 4 * growth + growth * 4 * growth * 9
            # the bottleneck, the new features and the concatenation that holds them all
            acts += 4 * growth * h * w + growth * h * w + (planes + growth) * h * w
            planes += growth
        if i < len(blocks) - 1:
            out = planes // 2
            macs += out * h * w * planes
            params += 2 * planes + out * planes
            acts += out * h * w
            planes = out
            h, w = h // 2, w // 2
    params += 2 * planes
    h, w = h // 4, w // 4
    if h < 1 or w < 1:
        return None
    macs += planes * h * w * m
    params += planes * h * w * m + m
    return LayerCount(macs, params, acts + m)


def _walk_logreg(c: int, h: int, w: int, m: int) -> LayerCount:
    return LayerCount(c * h * w * m, c * h * w * m + m, m)


_WALKERS = {
    "logreg": _walk_logreg,
    "lenet": _walk_lenet,
    "vgg11": _walk_vgg11,
    "resnet18": _walk_resnet18,
    "densenet121": _walk_densenet121,
}


def layer_count(architecture: str | ArchitectureRef, input_shape: tuple[int, int, int],
                num_outputs: int = 1) -> LayerCount | None:
    """MACs of one forward pass and parameter count; None if unknown or the shape is invalid
    (an uploaded architecture: the service uses what its validation measured)."""
    walker = _WALKERS.get(architecture) if isinstance(architecture, str) else None
    return walker(*input_shape, num_outputs) if walker else None


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
    one forward pass, counted elsewhere (a torchvision builder: nadcore.counting); by default
    the walk of a built-in."""
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
