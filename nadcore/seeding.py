"""Seeds derived from (seed, purpose, index) alone, so results never depend on batching."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

_EVAL_POINT = 0
_NETWORK = 1


def network_seed(seed: int, index: int) -> int:
    """The 63-bit seed of network `index` of a job seeded with `seed`."""
    state = np.random.SeedSequence(seed, spawn_key=(_NETWORK, index)).generate_state(2, np.uint32)
    return int(state[0]) | (int(state[1] & 0x7FFFFFFF) << 32)


def eval_point_seed(seed: int) -> int:
    state = np.random.SeedSequence(seed, spawn_key=(_EVAL_POINT,)).generate_state(2, np.uint32)
    return int(state[0]) | (int(state[1] & 0x7FFFFFFF) << 32)


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """PyTorch's global RNG (module constructors, dropout) seeded for a block, then restored."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(seed)
        yield
