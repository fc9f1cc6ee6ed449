"""What the half-plane saves (issue 26): the directions a Fourier grid trains before (every
frequency of the grid; a sine grid without its zero images) and now (each direction once,
`nadcore.probe.fourier_grid`), and their training time on this machine: LeNet on the stride-8 sine
grid of 32 x 32 inputs, all 12 frequencies (the old enumeration, conjugates trained as if
independent) against the 6 of the half-plane, the same recipe, one thread; then what a mirror
pair measured (the old grid trained each direction twice: the two numbers differ only by
training and test-set noise).

    python benchmarks/bench_half_plane.py [--num-train 2000] [--num-test 2000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from nadcore.probe.engine import fourier_image, run_probe
from nadcore.probe.fourier_grid import conjugate, grid, half_plane, self_conjugate
from nadcore.probe.spec import ProbeSpec


def counts(h: int, w: int, stride: int, phase: str) -> tuple[int, int]:
    full = [f for f in grid(h, w, stride) if phase == "cos" or not self_conjugate(*f, h, w)]
    return len(full), len(half_plane(grid(h, w, stride), h, w, phase))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for stride in (1, 2, 4, 8):
        for phase in ("cos", "sin"):
            full, half = counts(32, 32, stride, phase)
            print(json.dumps({"grid": f"32x32 stride {stride}", "phase": phase,
                              "full_grid": full, "half_plane": half}))
    freqs = [f for f in grid(32, 32, 8) if not self_conjugate(*f, 32, 32)]
    kept = half_plane(grid(32, 32, 8), 32, 32, "sin")
    spec = ProbeSpec.model_validate({
        "architecture": "lenet", "input_shape": [1, 32, 32],
        "directions": {"kind": "custom", "values": [[0.0] * 1023 + [1.0]]},
        "data": {"num_train": args.num_train, "num_test": args.num_test},
        "training": {"epochs": args.epochs}})
    timed = {}
    for name, chosen in (("full_grid", freqs), ("half_plane", kept)):
        rows = np.stack([fourier_image(ky, kx, (1, 32, 32), "sin") for ky, kx in chosen])
        t0 = time.perf_counter()
        result = run_probe(spec, rows, strategy="loop")
        timed[name] = (time.perf_counter() - t0, dict(zip(chosen, result.accuracies,
                                                          strict=True)))
        print(json.dumps({"trained": name, "directions": len(chosen),
                          "seconds": round(timed[name][0], 1)}))
    accuracy = timed["full_grid"][1]
    pairs = [(f, conjugate(*f, 32, 32)) for f in kept]
    gaps = [abs(accuracy[a] - accuracy[b]) for a, b in pairs]
    sd = 100 * math.sqrt(0.25 / args.num_test)
    print(json.dumps({"seconds_ratio": round(timed["half_plane"][0] / timed["full_grid"][0], 3),
                      "mirror_pairs": [[list(a), list(b), round(accuracy[a], 2),
                                        round(accuracy[b], 2)] for a, b in pairs],
                      "mean_gap_pp": round(float(np.mean(gaps)), 2),
                      "binomial_sd_of_one_accuracy_pp": round(sd, 2)}))


if __name__ == "__main__":
    main()
