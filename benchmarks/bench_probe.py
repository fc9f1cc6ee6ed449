"""Directions per hour of probe training: one-at-a-time ("loop") against batched ("vmap").

Both strategies train the same directions with the same seeds, in this process, on the same
device, alternating (the machine is shared: interleaving exposes both to the same load), best
of `--repeats`. The recipe is the paper's (lr 0.5 decayed linearly per batch, batch 128, clip
0.5, momentum 0) with fewer samples and epochs than its 10,000 / 10,000 x 20 so that a run
fits in minutes; directions per hour scale with 1 / (samples x epochs).

    python benchmarks/bench_probe.py                          # LeNet and LogReg on the CPU
    python benchmarks/bench_probe.py --arch lenet --directions 8 --num-train 2000 --epochs 2
    python benchmarks/bench_probe.py --device cuda --grid lenet   # + wall time, 16x16 grid
With `--grid ARCH`, also the wall time of the paper's full recipe (10,000 / 10,000 samples,
20 epochs) on the 16 x 16 Fourier grid of 32 x 32 inputs (stride 2, 256 directions), default
strategy, with progress lines (elapsed, done) so that a cut-off run still shows its rate.
Prints one JSON line per measurement and a markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from nadcore.probe.engine import make_directions, run_probe
from nadcore.probe.spec import ProbeSpec


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(spec: ProbeSpec, directions: np.ndarray, strategy: str,
            device: torch.device) -> tuple[float, np.ndarray]:
    _sync(device)
    t0 = time.perf_counter()
    result = run_probe(spec, directions, device=device, strategy=strategy)
    _sync(device)
    return time.perf_counter() - t0, result.accuracies


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", nargs="*", default=["lenet", "logreg"])
    p.add_argument("--directions", type=int, default=8)
    p.add_argument("--num-train", type=int, default=2000)
    p.add_argument("--num-test", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--grid", nargs="*", default=[], help="architectures for the grid wall time")
    args = p.parse_args()
    device = torch.device(args.device)
    machine = (f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
               f"{torch.__version__}"
               + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print(json.dumps({"machine": machine, "args": vars(args)}), flush=True)
    rows = []
    for arch in args.arch:
        # a stride-8 Fourier grid of cosines: 16 directions of 32 x 32, the first n used
        spec = ProbeSpec(
            architecture=arch, input_shape=(1, 32, 32),
            directions={"kind": "fourier", "grid_stride": 8, "phase": "cos"},
            data={"num_train": args.num_train, "num_test": args.num_test},
            training={"epochs": args.epochs}, seed=0,
        )
        directions = make_directions(spec)[: args.directions]
        measure(spec, directions[:1], "vmap", device)  # warm-up (allocator, kernels)
        best = {"loop": float("inf"), "vmap": float("inf")}
        accs = {}
        for rep in range(args.repeats):
            for strategy in ("loop", "vmap"):
                seconds, acc = measure(spec, directions, strategy, device)
                best[strategy] = min(best[strategy], seconds)
                accs[strategy] = acc
                print(json.dumps({"arch": arch, "strategy": strategy, "repeat": rep,
                                  "seconds": round(seconds, 3),
                                  "directions_per_hour": round(len(directions) / seconds * 3600)}),
                      flush=True)
        diff = float(np.abs(accs["loop"] - accs["vmap"]).max())
        rows.append((arch, len(directions), best["loop"], best["vmap"], diff))
    print(f"\n{machine}; {args.num_train}/{args.num_test} samples, {args.epochs} epochs, "
          f"best of {args.repeats}\n")
    print("| arch | directions | loop s | vmap s | loop dir/h | vmap dir/h | vmap / loop "
          "| max acc diff (pp) |")
    print("|---|---|---|---|---|---|---|---|")
    for arch, n, loop, vm, diff in rows:
        print(f"| {arch} | {n} | {loop:.2f} | {vm:.2f} | {n / loop * 3600:,.0f} | "
              f"{n / vm * 3600:,.0f} | {loop / vm:.2f}x | {diff:.2f} |")
    for arch in args.grid:
        grid_wall_time(arch, device)


def grid_wall_time(arch: str, device: torch.device) -> None:
    spec = ProbeSpec(architecture=arch, directions={"kind": "fourier", "grid_stride": 2},
                     seed=0)
    directions = make_directions(spec)
    t0 = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter() - t0
        if now - last[0] > 10 or done == total:
            last[0] = now
            print(json.dumps({"grid": arch, "elapsed_s": round(now, 1), "done": done,
                              "total": total}), flush=True)

    result = run_probe(spec, directions, device=device, progress=progress)
    _sync(device)
    seconds = time.perf_counter() - t0
    acc = result.accuracies
    print(json.dumps({"grid": arch, "directions": len(directions), "wall_s": round(seconds, 1),
                      "strategy": result.info["strategy"], "chunk": result.info["chunk_size"],
                      "acc_min": float(acc.min()), "acc_mean": float(acc.mean()),
                      "acc_max": float(acc.max())}), flush=True)
    print("accuracy grid (ky rows, kx cols, stride 2):")
    print(np.array2string(acc.reshape(16, 16), precision=0, max_line_width=200))


if __name__ == "__main__":
    main()
