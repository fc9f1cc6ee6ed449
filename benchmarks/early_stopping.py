"""How many LeNet networks split-half stability needs, against the paper's fixed 10,000.

    python benchmarks/early_stopping.py [--device cuda] [--target 0.9] [--k 16] [--max 20000]
"""

from __future__ import annotations

import argparse
import json
import time

from nadcore import NADSpec, run_spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default=None)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--max", type=int, default=20_000)
    ap.add_argument("--check-every", type=int, default=500)
    ap.add_argument("--method", default="finite_difference")
    args = ap.parse_args()
    spec = NADSpec(architecture="lenet", num_networks=args.max, seed=0, method=args.method,
                   target_stability=args.target, stability_k=args.k,
                   check_every=args.check_every)
    t0 = time.perf_counter()
    res = run_spec(spec, device=args.device)
    print(json.dumps({
        "architecture": "lenet", "method": args.method, "target": args.target, "k": args.k,
        "networks_used": res.num_networks, "stopped_early": res.info["stopped_early"],
        "stability": res.stability, "seconds": round(time.perf_counter() - t0, 1),
        "device": str(res.info["plan"]["device"]),
    }))


if __name__ == "__main__":
    main()
