"""The engine's intra-op thread count: what the process may use (nadcore.cores), never more.

PyTorch starts with one thread per physical core of the machine unless OMP_NUM_THREADS says
otherwise; under a cgroup quota or a narrow affinity mask that oversubscribes the cores, and
intra-op threads collapse as soon as anything else runs there (BENCHMARKS.md, Contention).
A lower count set by the caller (the workers run with OMP_NUM_THREADS=1) is kept.
"""

from __future__ import annotations

import torch

from nadcore.cores import usable_cores


def fit_threads() -> int:
    """Lowers torch's intra-op threads to the usable cores if above; returns the count."""
    cores = usable_cores()
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)
    return torch.get_num_threads()
