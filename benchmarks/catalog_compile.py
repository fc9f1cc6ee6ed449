"""Compiled against eager forward passes in the catalog's CPU build: the same networks of the
catalog's spec (`nads.catalog_export.catalog_spec`, fp32, one torch thread), computed by the
engine (`ShardRunner`) in eager mode and with `compiled=True` (torch.compile, Inductor:
`nadcore.nads.gradients.compiled_forward`), alternated round by round in one process, so that
the machine's load falls on both alike. Reports seconds per network, their ratio, and how far
the compiled gradients are from eager mode's (largest |difference| over the largest |gradient|).

    python benchmarks/catalog_compile.py [--arch resnet18] [--networks 2] [--rounds 2]

The first compiled network pays the compilation (reported apart). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from nadcore.nads.engine import ShardRunner, device_name
from nads.catalog_export import catalog_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--networks", type=int, default=2, help="networks per round and mode")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec = catalog_spec(args.arch, 2000, "fp32")
    eager, compiled = ShardRunner(spec, "cpu"), ShardRunner(spec, "cpu", compiled=True)
    t0 = time.perf_counter()
    compiled.partial(0, 1)
    first = time.perf_counter() - t0
    rounds = []
    for r in range(args.rounds):
        lo = 1 + r * args.networks
        want = eager.partial(lo, lo + args.networks)
        got = compiled.partial(lo, lo + args.networks)
        rounds.append({
            "networks": [lo, lo + args.networks],
            "eager_s_per_network": want.meta["seconds"] / args.networks,
            "compiled_s_per_network": got.meta["seconds"] / args.networks,
            "ratio": want.meta["seconds"] / got.meta["seconds"],
            "relative_difference": float(np.abs(got.gradients - want.gradients).max()
                                         / np.abs(want.gradients).max()),
            "bitwise_equal": bool(np.array_equal(got.gradients, want.gradients)),
        })
    print(json.dumps({"arch": args.arch, "device": device_name(torch.device("cpu")),
                      "capability": torch.backends.cpu.get_cpu_capability(),
                      "compiled": compiled.compiled, "torch": torch.__version__,
                      "compile_and_first_network_s": round(first, 1), "rounds": rounds},
                     indent=2))


if __name__ == "__main__":
    main()
