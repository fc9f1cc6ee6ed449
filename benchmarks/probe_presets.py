"""Measures the training presets (issue 17). Probe: candidate settings for `quick`: LeNet on a few
sine directions of 32 x 32 inputs, a low frequency that the paper's recipe learns ((0, 1): 81 %
in BENCHMARKS.md), a second low one and a high one (the control: LeNet does not learn it),
on the CPU with one thread. Prints one JSON line per setting: seconds, test accuracies and
final training losses. Poison (`--poison`): LeNet on digits with the shipped catalog's LeNet
NADs (catalog_data/lenet), indices 0 and 500, eps 0.05, under each poison preset: seconds,
training and clean test accuracies.

    python benchmarks/probe_presets.py                    # the candidates below
    python benchmarks/probe_presets.py --only quick paper
    python benchmarks/probe_presets.py --poison
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from nadcore.probe.engine import make_directions, run_probe
from nadcore.probe.spec import PRESETS, ProbeSpec

ROOT = Path(__file__).resolve().parent.parent

FREQUENCIES = [[0, 1], [1, 1], [8, 8]]
CANDIDATES = {
    "issue": {"data": {"num_train": 2000, "num_test": 2000}, "training": {"epochs": 3}},
    "b128-10k-5": {"data": {"num_train": 10000, "num_test": 2000}, "training": {"epochs": 5}},
    "b32-4k-5": {"data": {"num_train": 4000, "num_test": 2000},
                 "training": {"epochs": 5, "batch_size": 32}},
    "b32-4k-3": {"data": {"num_train": 4000, "num_test": 2000},
                 "training": {"epochs": 3, "batch_size": 32}},
    "b32-2k-5": {"data": {"num_train": 2000, "num_test": 2000},
                 "training": {"epochs": 5, "batch_size": 32}},
    "b128-10k-10": {"data": {"num_train": 10000, "num_test": 2000}, "training": {"epochs": 10}},
    "b128-20k-5": {"data": {"num_train": 20000, "num_test": 2000}, "training": {"epochs": 5}},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=None, help="settings or presets to run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--poison", action="store_true", help="the poison presets instead")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.poison:
        poison(args.threads)
        return
    settings = {**CANDIDATES, **{f"preset:{k}": {"preset": k} for k in PRESETS}}
    for name, fields in settings.items():
        if args.only and name not in args.only and name.removeprefix("preset:") not in args.only:
            continue
        spec = ProbeSpec.model_validate({
            "architecture": "lenet", "input_shape": [1, 32, 32], "seed": 0,
            "directions": {"kind": "fourier", "frequencies": FREQUENCIES, "phase": "sin"},
            **fields})
        t0 = time.perf_counter()
        res = run_probe(spec, make_directions(spec), strategy="loop")
        seconds = time.perf_counter() - t0
        print(json.dumps({
            "setting": name, "threads": args.threads, "seconds": round(seconds, 1),
            "per_direction_s": round(seconds / len(FREQUENCIES), 1),
            "data": spec.data.model_dump(), "training": spec.training.model_dump(),
            "frequencies": FREQUENCIES,
            "test_accuracy": [round(float(a), 2) for a in res.accuracies],
            "final_train_loss": [round(float(v), 4) for v in res.curves[:, -1, 0]],
        }), flush=True)


def poison(threads: int) -> None:
    from nadcore.poison.datasets import load_digits
    from nadcore.poison.engine import run_poison
    from nadcore.poison.spec import PRESETS as POISON_PRESETS
    from nadcore.poison.spec import PoisonSpec

    nads = np.load(ROOT / "catalog_data" / "lenet" / "nads.npy")
    data = load_digits()
    for name in POISON_PRESETS:
        spec = PoisonSpec.model_validate({
            "architecture": "lenet", "dataset": {"name": "digits"}, "nads": {"catalog": "lenet"},
            "indices": [0, 500], "eps": 0.05, "preset": name})
        t0 = time.perf_counter()
        results = run_poison(spec, data, nads)
        seconds = time.perf_counter() - t0
        print(json.dumps({
            "preset": name, "threads": threads, "seconds": round(seconds, 1),
            "training": spec.training.model_dump(), "indices": spec.indices,
            "train_accuracy": [round(float(r.train_accuracy[-1]), 2) for r in results],
            "test_accuracy": [round(float(r.test_accuracy[-1]), 2) for r in results],
        }), flush=True)


if __name__ == "__main__":
    main()
