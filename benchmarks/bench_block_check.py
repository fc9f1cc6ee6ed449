"""What the engine's check of an uploaded network where it runs costs
(`nadcore.uploaded.engine_assumptions.check_block`, called by `nadcore.nads.gradients` on the first
finite-difference block of each chunk of networks): the seconds spent in the check (its rows
evaluated again in a batch of their own, the first network's tensors loaded for it), against
the whole computation of the same networks, and the same networks computed with the check
switched off, their gradients compared bitwise.

    python benchmarks/bench_block_check.py [--arch resnet18] [--format pt2] [--networks 4]
                                           [--rounds 1]

A built-in exported as a torch.export program or TorchScript (`nads export`), through
`ShardRunner` with the engine's own plan on this CPU, one thread, in this process. Prints one
JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from nadcore import NADSpec
from nadcore.nads import gradients
from nadcore.nads.engine import ShardRunner
from nadcore.specs.architecture import ArchitectureRef
from nadcore.uploaded.network import register_archive
from nads.export_command import export_architecture

SHAPES = {"lenet": (1, 32, 32), "vgg11": (3, 32, 32), "resnet18": (3, 32, 32),
          "densenet121": (3, 32, 32)}


def run(spec: NADSpec, checked: bool) -> dict:
    runner = ShardRunner(spec, "cpu")
    spent: list[float] = []
    found: list[dict] = []
    method = gradients.GradientEvaluator._check_block

    def timed(self, *args):  # noqa: ANN001, ANN002, ANN202
        t0 = time.perf_counter()
        found.append(method(self, *args))
        spent.append(time.perf_counter() - t0)

    if not checked:
        runner.evaluator.block_check = None
    gradients.GradientEvaluator._check_block = timed
    try:
        t0 = time.perf_counter()
        grads = runner.gradients(0, spec.num_networks)
        total = time.perf_counter() - t0
    finally:
        gradients.GradientEvaluator._check_block = method
    return {"checked": checked, "seconds": total, "check_seconds": sum(spent),
            "checks": len(spent), "share": sum(spent) / total, "plan": runner.plan.as_dict(),
            "found": found, "grads": grads}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--format", choices=("pt2", "pt"), default="pt2")
    ap.add_argument("--networks", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    shape = SHAPES[args.arch]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_architecture(args.arch, shape, Path(tmp) / f"{args.arch}.{args.format}")
        ref = ArchitectureRef(id="0" * 32, sha256=register_archive(path))
        spec = NADSpec(architecture=ref, input_shape=shape, num_networks=args.networks)
        for _ in range(args.rounds):
            runs = [run(spec, checked) for checked in (True, False)]
            same = bool(np.array_equal(runs[0].pop("grads").numpy(),
                                       runs[1].pop("grads").numpy()))
            for r in runs:
                print(json.dumps({"arch": args.arch, "format": args.format,
                                  "networks": args.networks, **r,
                                  "bitwise_equal": same}), flush=True)


if __name__ == "__main__":
    main()
