"""Wall time of one whole NAD estimate (init, gradients, PCA, stability).

    python benchmarks/wall_time.py --arch resnet18 --networks 2000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

from nadcore import NADSpec, run_spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="lenet")
    ap.add_argument("--networks", type=int, default=10_000)
    ap.add_argument("--method", default="finite_difference")
    ap.add_argument("--device", default=None)
    ap.add_argument("--strategy", default=None)
    args = ap.parse_args()
    spec = NADSpec(architecture=args.arch, num_networks=args.networks, method=args.method)
    t0 = time.perf_counter()
    res = run_spec(spec, device=args.device, strategy=args.strategy)
    wall = time.perf_counter() - t0
    print(json.dumps({"arch": args.arch, "method": args.method, "networks": args.networks,
                      "wall_s": round(wall, 2), "net_per_s": round(args.networks / wall, 2),
                      "gradient_s": round(res.info["seconds"], 2), "plan": res.info["plan"],
                      "stability": res.stability}))


if __name__ == "__main__":
    main()
