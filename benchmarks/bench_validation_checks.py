"""What validation's engine checks cost (nadcore/uploaded/engine_assumptions.py: determinism and
per-sample independence, a batch of 8 evaluated twice, each sample alone and the batch
reversed, and the inputs of each job batch size above 8 evaluated again in batches of 8): the
seconds they add to the validation of the built-ins' archives, next to the whole
validation, and how far the measured rounding differences stay below the tolerance.

    python benchmarks/bench_validation_checks.py [--archs lenet,...] [--repeats 2]

Validation runs in this process here (in the service it runs in the sandbox: the same
computation plus the sandbox's constant start-up). One thread, best of `--repeats`. Prints one
JSON line per archive and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch

from nadcore.uploaded.validation import validate
from nads.export_command import export_architecture

SHAPES = {"logreg": (1, 32, 32), "lenet": (1, 32, 32), "vgg11": (3, 32, 32),
          "resnet18": (3, 32, 32), "densenet121": (3, 32, 32)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default=",".join(SHAPES))
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for arch in args.archs.split(","):
            shape = SHAPES[arch]
            for suffix in ("pt2", "pt"):
                path = export_architecture(arch, shape, Path(tmp) / f"{arch}.{suffix}")
                best_total, best_check, checks = float("inf"), float("inf"), {}
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    info = validate(path, shape, "torch-default")
                    best_total = min(best_total, time.perf_counter() - t0)
                    checks = info["engine_checks"]
                    best_check = min(best_check, checks["seconds"])
                worst = max(checks["alone"], checks["reordered"], checks["repeat"]) / \
                    checks["tolerance"]
                for b, difference in checks["larger_batches"].items():
                    worst = max(worst, difference / checks["larger_batches_tolerance"][b])
                row = {"arch": arch, "format": info["format"], "validation_s": best_total,
                       "checks_s": best_check, "share": best_check / best_total,
                       "tolerance": checks["tolerance"],
                       "worst_over_tolerance": worst}
                print(json.dumps(row), flush=True)
                rows.append(row)
    print("\n| arch | format | validation | of it, the checks | share | tolerance | "
          "largest difference / tolerance |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['format']} | {r['validation_s']:.2f} s | "
              f"{r['checks_s']:.3f} s | {100 * r['share']:.1f} % | {r['tolerance']:.2e} | "
              f"{r['worst_over_tolerance']:.1e} |")


if __name__ == "__main__":
    main()
