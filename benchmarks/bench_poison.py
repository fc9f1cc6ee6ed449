"""Accuracy vs. poison index on digits (docs/science.md, section 4, in miniature), with timings.

LeNet NADs of 1 x 32 x 32 inputs from `--networks` random networks (finite differences, the
paper's defaults), then one LeNet per poison index trained on the poisoned digits training set
(1,437 images) with the paper's recipe for `--epochs` epochs; clean test accuracy on the 360
test images. With `--flip` (needs `--networks` >= 1025 for a complete basis, or 1024 and the
completed basis), also the flipped-basis experiment against the same recipe on clean data.

    python benchmarks/bench_poison.py --networks 300 --eps 2 --epochs 8 --indices 0 5 10 50 250
Prints one JSON line per trained network and a markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from nadcore import estimate_nads
from nadcore.poison.datasets import load_digits
from nadcore.poison.engine import flip_dataset, run_poison, train_classifier
from nadcore.poison.spec import PoisonSpec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--networks", type=int, default=300)
    p.add_argument("--eps", type=float, nargs="*", default=[2.0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--indices", type=int, nargs="*", default=[0, 5, 10, 25, 50, 100, 250])
    p.add_argument("--flip", action="store_true")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    t0 = time.perf_counter()
    nads = estimate_nads("lenet", (1, 32, 32), num_networks=args.networks, seed=0,
                         device=args.device).nads
    nad_s = time.perf_counter() - t0
    print(json.dumps({"nads": list(nads.shape), "seconds": round(nad_s, 1),
                      "cpu": platform.processor() or platform.machine(),
                      "threads": torch.get_num_threads()}), flush=True)
    data = load_digits()
    rows = []
    for eps in args.eps:
        spec = PoisonSpec(architecture="lenet", dataset={"name": "digits"}, nads={"job": "-"},
                          indices=args.indices, eps=eps, training={"epochs": args.epochs})
        for res in run_poison(spec, data, nads, device=args.device):
            row = {"mode": "poison", "eps": eps, "index": res.info["index"],
                   "train": round(float(res.train_accuracy[-1]), 1),
                   "test": round(float(res.test_accuracy[-1]), 1),
                   "seconds": round(res.info["seconds"], 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.flip:
        spec = PoisonSpec(architecture="lenet", dataset={"name": "digits"}, nads={"job": "-"},
                          indices=[0], mode="flip", training={"epochs": args.epochs})
        clean = train_classifier(spec, data, data.x_train, device=args.device)
        flipped = run_poison(spec, data, nads, device=args.device)[0]
        err = float((flip_dataset(flip_dataset(data.x_test, nads), nads) - data.x_test).abs()
                    .max())
        for mode, res in (("clean", clean), ("flip", flipped)):
            row = {"mode": mode, "eps": None, "index": None,
                   "train": round(float(res.train_accuracy[-1]), 1),
                   "test": round(float(res.test_accuracy[-1]), 1),
                   "seconds": round(res.info["seconds"], 1), "flip_roundtrip_err": err}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nLeNet NADs from {args.networks} networks ({nad_s:.0f} s); digits, "
          f"{args.epochs} epochs, device {args.device}\n")
    print("| mode | eps | index | train acc % (poisoned) | clean test acc % | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['mode']} | {r['eps'] if r['eps'] is not None else '-'} | "
              f"{r['index'] if r['index'] is not None else '-'} | {r['train']} | {r['test']} | "
              f"{r['seconds']} |")


if __name__ == "__main__":
    main()
