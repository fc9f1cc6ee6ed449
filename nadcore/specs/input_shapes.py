"""Which input shapes the built-in architectures can take, by arithmetic alone (no torch).

The convolutions and poolings of LeNet, VGG-11, ResNet-18 and DenseNet-121 shrink H and W
independently; below a minimum size the feature map vanishes before the classifier (LeNet at
8x8: 8 -> 4 -> 2 -> 0 after its first pool). `nadcore.specs.layer_counts` walks the layers exactly
as `nadcore.networks.zoo` builds them and returns None for such a shape; the minimum of each
dimension is the smallest size that walk accepts. Every built-in takes any number of channels
(its first layer is built for C). The API refuses such a spec at submission through
`NADSpec`, instead of a worker failing on it minutes later.
"""

from __future__ import annotations

from functools import cache

from nadcore.specs.layer_counts import layer_count

_LARGE = 512  # the largest H and W a spec allows: the other dimension is held there


@cache
def minimum_size(architecture: str) -> tuple[int, int]:
    """(min H, min W) a built-in takes; (1, 1) for LogReg. ValueError for another name."""
    if layer_count(architecture, (1, _LARGE, _LARGE)) is None:
        raise ValueError(f"{architecture!r} is not a built-in architecture")
    h = next(s for s in range(1, _LARGE + 1)
             if layer_count(architecture, (1, s, _LARGE)) is not None)
    w = next(s for s in range(1, _LARGE + 1)
             if layer_count(architecture, (1, _LARGE, s)) is not None)
    return h, w


def shape_problem(architecture: str, input_shape: tuple[int, int, int]) -> str | None:
    """Why a built-in cannot take `input_shape` (C, H, W), or None when it can (or when the
    architecture is not a built-in: torchvision and uploaded models are checked by torch)."""
    if layer_count(architecture, (1, _LARGE, _LARGE)) is None:
        return None
    if layer_count(architecture, tuple(input_shape)) is not None:
        return None
    min_h, min_w = minimum_size(architecture)
    _, h, w = input_shape
    short = [f"{name} = {value} is below {architecture}'s minimum {least}"
             for name, value, least in (("H", h, min_h), ("W", w, min_w)) if value < least]
    detail = " and ".join(short) or f"H = {h}, W = {w}"
    return (f"{architecture} cannot take input shape {tuple(input_shape)}: "
            f"{detail} (its convolutions and poolings shrink the feature map to "
            f"nothing before the classifier); {architecture} takes H >= {min_h} and "
            f"W >= {min_w}, any number of channels")
