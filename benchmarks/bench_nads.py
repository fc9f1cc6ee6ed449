"""Networks per second of nadcore against a straightforward implementation of the paper.

Baseline (the paper's algorithm, as its scripts do it): for each network, build the module
with PyTorch's own init on the CPU, move it to the device, evaluate its 2*D perturbed inputs
in one batch, take central differences; next network. The baseline for autograd does one
forward and backward pass per network the same way. Both run in this process, on the same
device, at equal N, alternating, best of `--repeats`.

    python benchmarks/bench_nads.py                      # CPU set (logreg, lenet, resnet18)
    python benchmarks/bench_nads.py --device cuda --gpu  # GPU set
Prints one JSON line per measurement and a markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from nadcore import NADSpec
from nadcore.nads.engine import ShardRunner, eval_point_for
from nadcore.networks.factory import model_factory


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def baseline(arch: str, shape, n: int, method: str, device: torch.device, scale=100.0):
    """The paper's loop; returns the (n, D) gradients."""
    x0 = torch.as_tensor(eval_point_for(NADSpec(architecture=arch, input_shape=shape)))
    x0 = x0.to(device)
    d = x0.numel()
    factory = model_factory(arch)
    grads = []
    for j in range(n):
        torch.manual_seed(j)
        net = factory(shape, 1).to(device).eval()
        if method == "finite_difference":
            eye = torch.eye(d, device=device).view(d, *shape)
            with torch.no_grad():
                out = net(torch.cat([x0 + scale * eye, x0 - scale * eye]))[:, 0]
            grads.append((out[:d] - out[d:]) / (2 * scale))
        else:
            x = x0.clone().unsqueeze(0).requires_grad_(True)
            net(x)[0, 0].backward()
            grads.append(x.grad.reshape(-1))
    return torch.stack(grads).cpu()


def ours(arch, shape, n, method, device, strategy=None, channels_last=None):
    """nadcore's shard computation; None keeps the engine's own choice."""
    spec = NADSpec(architecture=arch, input_shape=shape, num_networks=n, method=method)
    runner = ShardRunner(spec, device, strategy=strategy)
    if channels_last is not None:
        runner.plan.channels_last = runner.evaluator.channels_last = channels_last
    return runner.partial(0, n)


def timed(fn, device):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def measure(arch, shape, n_base, n_ours, method, device, repeats, strategy=None,
            channels_last=None):
    base_t, our_t = [], []
    baseline(arch, shape, 1, method, device)  # warm-up: lazy inits, kernels, allocator
    part = ours(arch, shape, 2, method, device, strategy, channels_last)
    for _ in range(repeats):
        t, _ = timed(lambda: baseline(arch, shape, n_base, method, device), device)
        base_t.append(t / n_base)
        t, part = timed(lambda: ours(arch, shape, n_ours, method, device, strategy,
                                     channels_last), device)
        our_t.append(t / n_ours)
    row = {
        "arch": arch, "shape": list(shape), "method": method, "device": str(device),
        "n_baseline": n_base, "n_ours": n_ours,
        "baseline_net_per_s": 1 / min(base_t), "ours_net_per_s": 1 / min(our_t),
        "ratio": min(base_t) / min(our_t), "plan": part.meta["plan"],
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gpu", action="store_true", help="the GPU set (larger N, strategies)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", default=None, help="GPU set: comma-separated case numbers")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = False
    shape = (1, 32, 32)
    rows = []
    if not args.gpu:
        cases = [("logreg", 200, 2000, "finite_difference"), ("logreg", 2000, 2000, "autograd"),
                 ("lenet", 40, 200, "finite_difference"), ("lenet", 400, 2000, "autograd"),
                 ("resnet18", 2, 2, "finite_difference"), ("resnet18", 16, 32, "autograd")]
        for arch, nb, no, method in cases:
            rows.append(measure(arch, shape, nb, no, method, device, args.repeats))
        # the autograd target is stated against the baseline's finite differences
        fd = next(r for r in rows if r["arch"] == "lenet" and r["method"] == "finite_difference")
        ag = next(r for r in rows if r["arch"] == "lenet" and r["method"] == "autograd")
        print(json.dumps({"lenet_autograd_vs_baseline_fd":
                          ag["ours_net_per_s"] / fd["baseline_net_per_s"]}))
    else:
        cases = [("lenet", 64, 2048, "finite_difference", "vmap", None),
                 ("lenet", 64, 2048, "finite_difference", "loop", False),
                 ("lenet", 256, 8192, "autograd", "vmap", False),
                 ("resnet18", 16, 64, "finite_difference", "vmap", False),
                 ("resnet18", 16, 64, "finite_difference", "loop", False),
                 ("resnet18", 16, 64, "finite_difference", "loop", None),
                 ("resnet18", 64, 512, "autograd", "vmap", False)]
        only = set(args.only.split(",")) if args.only else None
        for i, (arch, nb, no, method, strategy, cl) in enumerate(cases):
            if only is None or str(i) in only:
                rows.append(measure(arch, shape, nb, no, method, device, args.repeats,
                                    strategy, cl))
    print(f"\nmachine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print("| arch | method | strategy | channels_last | N (base / ours) | baseline net/s "
          "| nadcore net/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['method']} | {r['plan']['strategy']} | "
              f"{r['plan']['channels_last']} | {r['n_baseline']} / "
              f"{r['n_ours']} | {r['baseline_net_per_s']:.3g} | {r['ours_net_per_s']:.3g} | "
              f"{r['ratio']:.1f}x |")


if __name__ == "__main__":
    main()
