"""Fidelity and speed of the forward-pass precisions (issue 14, section 1).

For each architecture, the same networks are evaluated at every precision (finite differences,
scale 100, the catalog's evaluation point), chunk by chunk, alternating precisions, until
`--networks` or the architecture's time budget is used up (the networks actually used are
reported). Against fp32: the relative error of the gradient block (whole, and the worst
network) and the top-k subspace overlap ||U_k^T V_k||_F^2 / k of the NADs at k = 1, 4, 16, 64.
Speed: networks/s, TFLOP/s (nadcore.nads.cost's FLOPs per network) and the fraction of the device's
dense peak for that precision, and the paper's loop (benchmarks/bench_nads.py: baseline) on
the same device in the same run.

A precision is proposed as "auto" for an architecture when its overlap is >= 0.99 at k = 16 and
64 (ResNet-18: k = 4 also, its first NAD is not identifiable: top two eigenvalues nearly tied).

    python benchmarks/bench_precision.py --device cuda --out precision.json
    python benchmarks/bench_precision.py --device cpu --archs logreg,lenet --networks 8  # tiny
Prints one JSON line per architecture and a markdown table; --auto-out writes the proposed
NADS_AUTO_BF16 list (nadcore/nads/precision.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_nads import baseline  # noqa: E402

from nadcore import NADSpec  # noqa: E402
from nadcore.nads.cost import estimate_cost  # noqa: E402
from nadcore.nads.decompose import covariance_from_gradients, subspace_overlap, top_eigen  # noqa: E402
from nadcore.nads.engine import ShardRunner, device_name  # noqa: E402

# Dense peaks (TFLOP/s) from NVIDIA's datasheets (SXM parts); fp32 = non-tensor FP32.
# The issue quotes ~790 TFLOP/s bf16 for the H200; the H200 SXM datasheet says 989 (same
# tensor cores as the H100 SXM). Both fractions are printed for the H200.
PEAKS = {"H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
         "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}}
ISSUE_H200_BF16 = 790.0
KS = (1, 4, 16, 64)


def peak_for(name: str, precision: str) -> float | None:
    for key, table in PEAKS.items():
        if key in name:
            return table.get(precision)
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def nads_of(grads: torch.Tensor, k: int) -> np.ndarray:
    _, vectors = top_eigen(covariance_from_gradients(grads), k)
    return vectors.numpy()


def measure(arch: str, precisions: list[str], networks: int, budget_s: float, chunk: int,
            device: torch.device, baseline_networks: int) -> dict:
    runners = {p: ShardRunner(NADSpec(architecture=arch, num_networks=max(networks, 2),
                                      precision=p), device) for p in precisions}
    resolved = {p: r.precision for p, r in runners.items()}
    grads: dict[str, list[torch.Tensor]] = {p: [] for p in precisions}
    seconds = dict.fromkeys(precisions, 0.0)
    for r in runners.values():  # warm-up (cuDNN autotuning, allocator) outside the timing
        r.gradients(0, 1)
        _sync(device)
    done, t_all = 0, time.perf_counter()
    while done < networks and (done == 0 or time.perf_counter() - t_all < budget_s):
        hi = min(networks, done + chunk)
        for p in precisions:
            _sync(device)
            t0 = time.perf_counter()
            grads[p].append(runners[p].gradients(done, hi))
            _sync(device)
            seconds[p] += time.perf_counter() - t0
        done = hi
    g = {p: torch.cat(v).double() for p, v in grads.items()}
    flops = estimate_cost(NADSpec(architecture=arch, num_networks=2)).flops_per_network
    name = device_name(device)
    out: dict = {"arch": arch, "device": name, "networks": done, "torch": torch.__version__,
                 "precisions": {}}
    ref = "fp32" if "fp32" in g else precisions[0]
    k_max = min(done - 1, 1024)
    ref_nads = nads_of(g[ref], k_max) if k_max >= 1 else None
    for p in precisions:
        rate = done / seconds[p]
        peak = peak_for(name, resolved[p])
        row = {"resolved": resolved[p], "seconds": round(seconds[p], 3),
               "networks_per_s": round(rate, 2),
               "tflops": None if flops is None else float(f"{flops * rate / 1e12:.4g}"),
               "peak_fraction": None if flops is None or peak is None
               else round(flops * rate / 1e12 / peak, 4)}
        if "H200" in name and resolved[p] == "bf16" and flops is not None:
            row["peak_fraction_issue_790"] = round(flops * rate / 1e12 / ISSUE_H200_BF16, 4)
        if p != ref:
            diff = g[p] - g[ref]
            row["gradient_rel_error"] = float(diff.norm() / g[ref].norm())
            row["gradient_rel_error_max_network"] = float(
                (diff.norm(dim=1) / g[ref].norm(dim=1)).max())
            if ref_nads is not None:
                other = nads_of(g[p], k_max)
                row["overlap"] = {k: subspace_overlap(ref_nads, other, k) for k in KS
                                  if k <= k_max}
        out["precisions"][p] = row
    if baseline_networks > 0:
        baseline(arch, (1, 32, 32), 1, "finite_difference", device)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        baseline(arch, (1, 32, 32), baseline_networks, "finite_difference", device)
        _sync(device)
        rate = baseline_networks / (time.perf_counter() - t0)
        out["baseline"] = {"networks": baseline_networks, "networks_per_s": round(rate, 2),
                           "tflops": None if flops is None else float(f"{flops * rate / 1e12:.4g}")}
        for row in out["precisions"].values():
            row["speedup_vs_baseline"] = round(row["networks_per_s"] / rate, 2)
    return out


def proposes_bf16(result: dict) -> bool:
    row = result["precisions"].get("bf16")
    if row is None or "overlap" not in row or row["resolved"] != "bf16":
        return False
    ks = [k for k in (16, 64) if k in row["overlap"]]
    if result["arch"] == "resnet18":
        ks += [4] if 4 in row["overlap"] else []
    return bool(ks) and all(row["overlap"][k] >= 0.99 for k in ks)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="logreg,lenet,vgg11,resnet18,densenet121")
    ap.add_argument("--precisions", default="fp32,tf32,bf16")
    ap.add_argument("--networks", type=int, default=2000)
    ap.add_argument("--budget-s", type=float, default=40.0,
                    help="per architecture: stop adding networks past this (all precisions)")
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--baseline-networks", type=int, default=8)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--auto-out", type=Path, default=None,
                    help="write the architectures proposed for bf16 under auto (NADS_AUTO_BF16)")
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results = []
    errors = {}
    for arch in args.archs.split(","):
        try:  # one prepared GPU run: an architecture that fails must not cost the others
            res = measure(arch, args.precisions.split(","), args.networks, args.budget_s,
                          min(args.chunk, args.networks), device, args.baseline_networks)
        except Exception as exc:  # noqa: BLE001 - reported and recorded, then the next one
            errors[arch] = f"{type(exc).__name__}: {exc}"
            print(json.dumps({"arch": arch, "error": errors[arch]}), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        res["propose_bf16"] = proposes_bf16(res)
        print(json.dumps(res), flush=True)
        results.append(res)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
        if errors:
            args.out.with_suffix(".errors.json").write_text(json.dumps(errors, indent=2))
    if args.auto_out:
        args.auto_out.write_text(",".join(r["arch"] for r in results if r["propose_bf16"]))
    print("\n| arch | N | precision | net/s | TFLOP/s | of peak | vs paper loop | grad rel err "
          "(max net) | overlap k=1/4/16/64 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for p, row in r["precisions"].items():
            ov = row.get("overlap", {})
            print(f"| {r['arch']} | {r['networks']} | {p} ({row['resolved']}) | "
                  f"{row['networks_per_s']} | {row['tflops']} | {row['peak_fraction']} | "
                  f"{row.get('speedup_vs_baseline')}x | "
                  f"{row.get('gradient_rel_error', 0):.2e} "
                  f"({row.get('gradient_rel_error_max_network', 0):.2e}) | "
                  f"{' / '.join(f'{ov[k]:.4f}' for k in KS if k in ov) or '-'} |")


if __name__ == "__main__":
    main()
