"""Uploaded architectures against the built-in one: networks per second of the engine for the
same LeNet given as the built-in class, as a TorchScript archive (`.pt`) and as a torch.export
program (`.pt2`), each through `ShardRunner` with the engine's own plan, in this process,
interleaved, best of `--repeats`. All three draw the same networks (the same init plan), so the
gradients are compared too.

    python benchmarks/bench_uploaded.py            # LeNet 1x32x32, CPU
Prints one JSON line per measurement and a markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch

from nadcore import NADSpec
from nadcore.nads.engine import ShardRunner
from nadcore.specs.architecture import ArchitectureRef
from nadcore.uploaded.network import register_archive
from nads.export_command import export_architecture


def per_network(architecture, shape, n: int, method: str) -> tuple[float, torch.Tensor, str]:
    spec = NADSpec(architecture=architecture, input_shape=shape, num_networks=n, method=method)
    runner = ShardRunner(spec, "cpu")
    t0 = time.perf_counter()
    grads = runner.gradients(0, n)
    return (time.perf_counter() - t0) / n, grads, runner.plan.strategy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="lenet")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    shape = (1, 32, 32)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation warnings
        kinds = {"built-in": args.arch}
        for fmt, suffix in (("TorchScript", "pt"), ("torch.export", "pt2")):
            path = export_architecture(args.arch, shape, Path(tmp) / f"model.{suffix}")
            kinds[fmt] = ArchitectureRef(id="0" * 32, sha256=register_archive(path))
        rows = []
        for method, n in (("finite_difference", 8), ("autograd", 200)):
            best = {k: float("inf") for k in kinds}
            grads, strategies = {}, {}
            for arch in kinds.values():  # warm-up
                per_network(arch, shape, 2, method)
            for _ in range(args.repeats):
                for kind, arch in kinds.items():
                    t, grads[kind], strategies[kind] = per_network(arch, shape, n, method)
                    best[kind] = min(best[kind], t)
            for kind in kinds:
                row = {"arch": args.arch, "shape": list(shape), "method": method,
                       "format": kind, "networks": n, "ms_per_network": 1e3 * best[kind],
                       "vs_builtin": best["built-in"] / best[kind],
                       "strategy": strategies[kind],
                       "max_abs_diff_vs_builtin": float(
                           (grads[kind] - grads["built-in"]).abs().max())}
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| method | format | strategy | ms / network | speed vs built-in | "
          "max |grad diff| |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['format']} | {r['strategy']} | "
              f"{r['ms_per_network']:.1f} | {r['vs_builtin']:.2f}x | "
              f"{r['max_abs_diff_vs_builtin']:.1e} |")


if __name__ == "__main__":
    main()
