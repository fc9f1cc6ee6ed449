"""Seeds derived from (seed, purpose, index) alone, so results never depend on batching."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

# Every namespace of derived seeds, in one place. A derived seed is NumPy's SeedSequence of the
# job's seed with the spawn key (namespace, purpose..., index): keys of different namespaces never
# collide, so no two random streams of a job coincide. These numbers are part of every stored
# result (a job reproduces bitwise from its spec): never renumber them, only add.
EVAL_POINT = 0  # (EVAL_POINT,): a NAD job's evaluation point x0
NETWORK = 1  # (NETWORK, j): network j of a NAD job
PROBE = 100  # (PROBE, purpose[, direction]): probe jobs, purposes below
PROBE_INIT, PROBE_TRAIN, PROBE_TEST, PROBE_SHUFFLE, PROBE_DROPOUT, PROBE_REPLICATE = range(6)
POISON = 200  # (POISON, purpose, index position): poison jobs, purposes below
POISON_INIT, POISON_SHUFFLE, POISON_DROPOUT = range(3)


def derive_seed(seed: int, *key: int) -> int:
    """The 63-bit seed of spawn key `key` (namespace first) of a job seeded with `seed`."""
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(2, np.uint32)
    return int(state[0]) | (int(state[1] & 0x7FFFFFFF) << 32)


def network_seed(seed: int, index: int) -> int:
    """The seed of network `index` of a NAD job seeded with `seed`."""
    return derive_seed(seed, NETWORK, index)


def eval_point_seed(seed: int) -> int:
    """The seed of a NAD job's evaluation point."""
    return derive_seed(seed, EVAL_POINT)


def probe_seed(seed: int, purpose: int, index: int | None = None) -> int:
    """The seed for `purpose` (PROBE_*) of direction `index` (or of the whole job)."""
    return derive_seed(seed, PROBE, purpose) if index is None else \
        derive_seed(seed, PROBE, purpose, index)


def replicate_seed(seed: int, replicate: int) -> int:
    """The job seed that replicate `replicate` of a probe job seeded with `seed` trains with:
    the job's own for replicate 0 (a job without replicates is its replicate 0), a derived one
    for each other, so that every replicate draws its own networks, data and shuffles."""
    return seed if replicate == 0 else derive_seed(seed, PROBE, PROBE_REPLICATE, replicate)


def poison_seed(seed: int, purpose: int, position: int) -> int:
    """The seed for `purpose` (POISON_*) of index position `position` of a poison job."""
    return derive_seed(seed, POISON, purpose, position)


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """PyTorch's global RNG (module constructors, dropout) seeded for a block, then restored."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(seed)
        yield
