"""What one forward pass of a built-in architecture costs, walked analytically through its
layers exactly as `nadcore.networks.zoo` builds them: multiply-adds of the convolutions and linear
layers, parameters, and activations. No torch (the API checks input shapes and costs with it);
torchvision builders are counted with torch instead (`nadcore.networks.counting`).
"""

from __future__ import annotations

from dataclasses import dataclass

from nadcore.specs.architecture import ArchitectureRef


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
