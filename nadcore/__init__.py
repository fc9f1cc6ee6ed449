"""nadcore: neural anisotropy directions of random networks, in PyTorch and NumPy.

    from nadcore import estimate_nads
    res = estimate_nads("lenet", input_shape=(1, 32, 32), num_networks=2000, seed=0)
    res.nads, res.eigenvalues, res.stability

`nadcore.spec` and `nadcore.cost` import no torch (the API validates specs with them); the
names below load the engine, and torch with it, on first use.
"""

from __future__ import annotations

import importlib

from .cost import CostEstimate, estimate_cost
from .spec import NADSpec

_LAZY = {
    "estimate_nads": "engine",
    "run_spec": "engine",
    "compute_shard": "engine",
    "finalize": "engine",
    "NADResult": "engine",
    "Cancelled": "control",
    "ShardRunner": "engine",
    "PartialNADs": "partial",
    "merge_partials": "partial",
    "subspace_overlap": "decompose",
    "build_model": "networks",
    "ArchitectureError": "networks",
    "torchvision_builders": "zoo",
}

__all__ = ["CostEstimate", "NADSpec", "estimate_cost", *_LAZY]

def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'nadcore' has no attribute {name!r}")
