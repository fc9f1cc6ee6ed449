"""nadcore: neural anisotropy directions of random networks, in PyTorch and NumPy.

    from nadcore import estimate_nads
    res = estimate_nads("lenet", input_shape=(1, 32, 32), num_networks=2000, seed=0)
    res.nads, res.eigenvalues, res.stability

`nadcore.nads.spec` and `nadcore.nads.cost` import no torch (the API validates specs with them); the
names below load the engine, and torch with it, on first use.
"""

from __future__ import annotations

import importlib

from nadcore.nads.cost import CostEstimate, estimate_cost
from nadcore.nads.spec import NADSpec

_LAZY = {
    "estimate_nads": "nads.engine",
    "run_spec": "nads.engine",
    "compute_shard": "nads.engine",
    "finalize": "nads.engine",
    "NADResult": "nads.engine",
    "Cancelled": "control",
    "ShardRunner": "nads.engine",
    "PartialNADs": "nads.partial",
    "merge_partials": "nads.partial",
    "subspace_overlap": "nads.decompose",
    "build_model": "networks.factory",
    "ArchitectureError": "networks.factory",
    "torchvision_builders": "networks.zoo",
}

__all__ = ["CostEstimate", "NADSpec", "estimate_cost", *_LAZY]

def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"nadcore.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'nadcore' has no attribute {name!r}")
