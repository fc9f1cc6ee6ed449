"""What the sandbox costs: one NAD shard of a built-in architecture computed in this process
(what a worker does for a built-in) against the same shard of the same architecture uploaded as
a torch.export program and run in the bubblewrap sandbox (what a worker does for an upload:
a fresh sandbox, Python and torch started in it, the archive checked and loaded, the result sent
back and checked). Same spec, same networks, interleaved, best of `--repeats`, one thread each.

    python benchmarks/bench_sandbox.py                 # LeNet and ResNet-18, 1x32x32, FD
Prints one JSON line per measurement and a markdown table at the end.
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

from nadcore import NADSpec, compute_shard
from nadcore.specs.architecture import ArchitectureRef
from nads.export_command import export_architecture
from store.blobs import open_blob_store
from store.settings import Settings
from worker.kinds.nads import sandboxed_shard

# networks per shard: a shard of a real job lasts a minute or more on this CPU
SIZES = {"lenet": 1000, "resnet18": 3}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="lenet,resnet18")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--networks", type=int, default=0, help="override the networks per shard")
    args = ap.parse_args()
    torch.set_num_threads(1)
    shape = (1, 32, 32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        settings = Settings(data_dir=Path(tmp))
        blobs = open_blob_store(settings)
        for arch in args.archs.split(","):
            n = args.networks or SIZES[arch]
            path = export_architecture(arch, shape, Path(tmp) / f"{arch}.pt2")
            sha, _ = blobs.put_file(path)
            ref = ArchitectureRef(id="0" * 32, sha256=sha, init="torch-default")
            specs = {kind: NADSpec(architecture=a, input_shape=shape, num_networks=n)
                     for kind, a in (("built-in", arch), ("uploaded, sandboxed", ref))}
            best = dict.fromkeys(specs, float("inf"))
            parts = {}
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                parts["built-in"] = compute_shard(specs["built-in"], 0, n)
                best["built-in"] = min(best["built-in"], time.perf_counter() - t0)
                t0 = time.perf_counter()
                parts["uploaded, sandboxed"] = sandboxed_shard(
                    settings, specs["uploaded, sandboxed"], blobs.path(sha), 0, n, 1,
                    lambda d, t: None, lambda: False)
                best["uploaded, sandboxed"] = min(best["uploaded, sandboxed"],
                                                  time.perf_counter() - t0)
            diff = float(np.abs(parts["built-in"].gradients -
                                parts["uploaded, sandboxed"].gradients).max())
            for kind in specs:
                row = {"arch": arch, "shape": list(shape), "method": "finite_difference",
                       "networks": n, "kind": kind, "seconds": round(best[kind], 2),
                       "ratio_vs_builtin": round(best[kind] / best["built-in"], 3),
                       "max_abs_grad_diff": diff}
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(f"\ntorch {torch.__version__}, 1 thread\n")
    print("| arch | networks | kind | seconds (best) | time vs built-in | max |grad diff| |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['networks']} | {r['kind']} | {r['seconds']:.1f} | "
              f"{r['ratio_vs_builtin']:.3f}x | {r['max_abs_grad_diff']:.1e} |")


if __name__ == "__main__":
    main()
