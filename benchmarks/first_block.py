"""DenseNet-121's first dense block computed only where a pixel's perturbation reaches it
(`nadcore.nads.first_block`) against the whole forward pass, eager and compiled: the same
networks of the catalog's spec (fp32, one torch thread) through the engine (`ShardRunner`
with `first_block_local` off and on, `compiled` off and on), one after the other in each round,
in one process. Reports seconds per network, the ratios to the whole eager forward, and how far
each is from it (largest |difference| over the largest |gradient|).

    python benchmarks/first_block.py [--networks 1] [--rounds 1]

The compiled runners' first network pays the compilation (reported apart). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from nadcore.nads.engine import ShardRunner, device_name
from nads.catalog_export import catalog_spec

MODES = {"whole_eager": (False, False), "whole_compiled": (False, True),
         "local_eager": (True, False), "local_compiled": (True, True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=1, help="networks per round and mode")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec = catalog_spec("densenet121", 2000, "fp32")
    runners = {mode: ShardRunner(spec, "cpu", first_block_local=local, compiled=compiled)
               for mode, (local, compiled) in MODES.items()}
    first = {}
    for mode, runner in runners.items():
        if runner.compiled:
            t0 = time.perf_counter()
            runner.evaluator(runner.sampler.sample(range(1)), range(0, 128))
            first[mode] = round(time.perf_counter() - t0, 1)
    rounds = []
    for r in range(args.rounds):
        lo = 1 + r * args.networks
        parts = {mode: runner.partial(lo, lo + args.networks) for mode, runner in runners.items()}
        want = parts["whole_eager"]
        rounds.append({"networks": [lo, lo + args.networks]} | {mode: {
            "s_per_network": round(part.meta["seconds"] / args.networks, 2),
            "speedup": round(want.meta["seconds"] / part.meta["seconds"], 3),
            "relative_difference": float(np.abs(part.gradients - want.gradients).max()
                                         / np.abs(want.gradients).max()),
            "plan": {k: part.meta["plan"][k] for k in ("compiled", "first_block_local")},
        } for mode, part in parts.items()})
    print(json.dumps({"device": device_name(torch.device("cpu")),
                      "capability": torch.backends.cpu.get_cpu_capability(),
                      "torch": torch.__version__, "compile_and_first_block_s": first,
                      "load_average": os.getloadavg(), "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
