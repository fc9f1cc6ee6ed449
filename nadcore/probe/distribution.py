"""The linearly separable distribution D(v) of a probe (docs/science.md, section 3):
x = y (eps/2) v + w_perp with w ~ N(0, sigma^2 I) and w_perp its part orthogonal to v, labels
balanced."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def sample_dataset(
    direction: np.ndarray | torch.Tensor,
    input_shape: Sequence[int],
    num: int,
    sigma: float,
    epsilon: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`num` samples of D(v): x = y (eps/2) v + w_perp, w ~ N(0, sigma^2 I), w_perp = w minus
    its component along v; y = +1 for exactly num//2 samples and -1 for the rest, shuffled.

    Returns x (num, C, H, W) float32 and the class index (y + 1) / 2 in {0, 1} (int64). The
    projection is done in float64, so <x, v> = +-eps/2 to float32 rounding. Drawn on the
    generator's device, from the generator alone.
    """
    dev = generator.device
    shape = tuple(int(s) for s in input_shape)
    v = torch.as_tensor(direction).to(dev, torch.float64).reshape(-1)
    if v.numel() != math.prod(shape):
        raise ValueError(f"direction has {v.numel()} values, input shape {shape} needs "
                         f"{math.prod(shape)}")
    v = v / v.norm()
    labels = torch.zeros(num, dtype=torch.int64, device=dev)
    labels[: num // 2] = 1
    labels = labels[torch.randperm(num, generator=generator, device=dev)]
    w = torch.randn((num, v.numel()), generator=generator, device=dev).to(torch.float64)
    w.mul_(sigma)
    y = labels.to(torch.float64) * 2 - 1
    coef = y * (epsilon / 2) - w @ v
    x = w.addr_(coef, v)  # w - (w.v) v + y (eps/2) v, in place
    return x.to(torch.float32).view(num, *shape), labels
