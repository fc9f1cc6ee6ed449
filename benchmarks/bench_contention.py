"""Processes x threads on a shared CPU: the layouts of issue 19, measured in one sitting.

    python benchmarks/bench_contention.py                 # 300 LeNets per process
    python benchmarks/bench_contention.py --networks 50 --rounds 3  # a shared machine

Part 1, layouts: each process computes LeNet finite differences (1x32x32, scale 100) through
`estimate_nads` (PCA and stability included) for --networks networks, after a warm-up; the
processes of a layout start together (a barrier on stdin) and each reports its ms per network;
throughput is the sum of their networks per second. With --rounds, the layouts run in turn
round after round and each keeps its best round (others' load comes and goes). Thread counts
are set the way the workers set them, in the environment before torch loads (OMP_NUM_THREADS,
MKL_NUM_THREADS), with and without OMP_WAIT_POLICY=PASSIVE.

Part 2, the engine against the paper's loop (`bench_nads.measure`: the baseline loop and
nadcore's shard alternate in one process, best of --repeats) in two copies at once, as two
workers on two cores, for 1 and 2 threads per process.

Prints one JSON line per measurement, then markdown tables and the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPE = (1, 32, 32)


def child_layout(networks: int) -> dict:
    import torch

    from nadcore import estimate_nads

    estimate_nads("lenet", input_shape=SHAPE, num_networks=4, seed=1)  # warm-up
    _barrier()
    t0 = time.perf_counter()
    res = estimate_nads("lenet", input_shape=SHAPE, num_networks=networks, seed=0,
                        method="finite_difference", scale=100.0)
    wall = time.perf_counter() - t0
    return {"ms_per_net": 1000 * wall / networks, "threads": torch.get_num_threads(),
            "plan_threads": res.info["plan"]["threads"]}


def child_paper(n_base: int, n_ours: int, repeats: int) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    from bench_nads import baseline, measure, ours

    device = torch.device("cpu")
    baseline("lenet", SHAPE, 1, "finite_difference", device)  # warm-up before the barrier
    ours("lenet", SHAPE, 2, "finite_difference", device)
    _barrier()
    row = measure("lenet", SHAPE, n_base, n_ours, "finite_difference", device, repeats)
    return {"paper_net_per_s": row["baseline_net_per_s"], "engine_net_per_s":
            row["ours_net_per_s"], "ratio": row["ratio"], "threads": torch.get_num_threads()}


def _barrier() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


def run_together(child_args: list[str], copies: int, threads: int, passive: bool) -> list[dict]:
    """Starts `copies` children, releases them at once, returns their JSON results."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    procs = [subprocess.Popen([sys.executable, __file__, *child_args], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
             for _ in range(copies)]
    for p in procs:
        while (line := p.stdout.readline()) and line.strip() != "ready":
            pass
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"child {child_args} failed with {p.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--networks", type=int, default=300, help="LeNets per process, part 1")
    ap.add_argument("--paper-networks", type=int, default=40, help="paper loop N, part 2")
    ap.add_argument("--engine-networks", type=int, default=200, help="engine N, part 2")
    ap.add_argument("--repeats", type=int, default=2, help="part 2: best of")
    ap.add_argument("--rounds", type=int, default=1, help="part 1: best of, interleaved")
    ap.add_argument("--child", choices=["layout", "paper"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "layout":
        print(json.dumps(child_layout(args.networks)))
        return
    if args.child == "paper":
        print(json.dumps(child_paper(args.paper_networks, args.engine_networks, args.repeats)))
        return

    from nadcore.cores import usable_cores

    print(f"machine: {platform.machine()}, {usable_cores()} usable cores, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    layouts = [("1 process x 2 threads", 1, 2, False), ("1 process x 1 thread", 1, 1, False),
               ("2 processes x 1 thread, at once", 2, 1, False),
               ("2 processes x 2 threads, at once", 2, 2, False),
               ("1 process x 2 threads, PASSIVE", 1, 2, True),
               ("2 processes x 1 thread, at once, PASSIVE", 2, 1, True),
               ("2 processes x 2 threads, at once, PASSIVE", 2, 2, True)]
    best: dict[str, dict] = {}
    for _ in range(args.rounds):  # the layouts in turn, each round; the best round counts
        for name, copies, threads, passive in layouts:
            load = os.getloadavg()[0]
            res = run_together(["--child", "layout", "--networks", str(args.networks)],
                               copies, threads, passive)
            row = {"layout": name, "load_before": load,
                   "ms_per_net": [r["ms_per_net"] for r in res],
                   "net_per_s": sum(1000 / r["ms_per_net"] for r in res),
                   "threads": [r["plan_threads"] for r in res]}
            print(json.dumps(row), flush=True)
            if name not in best or row["net_per_s"] > best[name]["net_per_s"]:
                best[name] = row
    rows = [best[name] for name, *_ in layouts]
    paper = []
    for threads in (1, 2):
        load = os.getloadavg()[0]
        res = run_together(["--child", "paper", "--paper-networks", str(args.paper_networks),
                            "--engine-networks", str(args.engine_networks), "--repeats",
                            str(args.repeats)], 2, threads, False)
        row = {"threads": threads, "load_before": load, "copies": res}
        print(json.dumps(row), flush=True)
        paper.append(row)

    print(f"\nLeNet, finite differences, 1x32x32, {args.networks} networks per process "
          f"through estimate_nads, best of {args.rounds} interleaved round(s); load average "
          f"{os.getloadavg()[0]:.2f} at the end")
    print("| layout | load before (best round) | per process | throughput | vs 1x2 |")
    print("|---|---|---|---|---|")
    single = rows[0]["net_per_s"]
    for r in rows:
        per = " and ".join(f"{m:.1f}" for m in r["ms_per_net"])
        print(f"| {r['layout']} | {r['load_before']:.2f} | {per} ms/net | "
              f"{r['net_per_s']:.1f} nets/s | {r['net_per_s'] / single:.2f}x |")
    print(f"\nEngine against the paper loop, two copies at once (paper N={args.paper_networks}, "
          f"engine N={args.engine_networks}, best of {args.repeats})")
    print("| threads per process | paper loop net/s | engine net/s | engine / paper |")
    print("|---|---|---|---|")
    for r in paper:
        c = r["copies"]
        print(f"| {r['threads']} | " + " | ".join(
            " and ".join(f"{x[k]:.3g}" for x in c)
            for k in ("paper_net_per_s", "engine_net_per_s")) + " | "
            + " and ".join(f"{x['ratio']:.2f}x" for x in c) + " |")
    gain = rows[2]["net_per_s"] / single
    worst = min(x["ratio"] for x in paper[0]["copies"])
    print(f"\ntarget 1: 2 x 1 thread at once / 1 x 2 threads = {gain:.2f}x (>= 1.3x: "
          f"{'met' if gain >= 1.3 else 'NOT met'})")
    print(f"target 2: default layout (1 thread per process), engine / paper loop beside it, "
          f"worst copy = {worst:.2f}x (>= 1x: {'met' if worst >= 1 else 'NOT met'})")


if __name__ == "__main__":
    main()
