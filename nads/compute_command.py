"""`nads compute`: estimate NADs from the command line."""

from __future__ import annotations

import argparse
import json
import sys


def _shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected C,H,W (e.g. 1,32,32), got {text!r}") from exc
    return c, h, w


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compute", help="estimate the NADs of an architecture")
    p.add_argument("--arch", required=True, help="logreg, lenet, vgg11, resnet18, densenet121 "
                   "or torchvision:<name>")
    p.add_argument("--input-shape", type=_shape, default=(1, 32, 32), help="C,H,W (1,32,32)")
    p.add_argument("--networks", type=int, default=10_000, help="number of networks (10000)")
    p.add_argument("--method", default="finite-difference",
                   choices=["finite-difference", "autograd"])
    p.add_argument("--scale", type=float, default=100.0, help="finite-difference step (100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=None, help="NADs kept (default min(D, N-1))")
    p.add_argument("--target-stability", type=float, default=None,
                   help="stop once split-half stability at --stability-k reaches this")
    p.add_argument("--stability-k", type=int, default=16)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    p.add_argument("--chunk-size", type=int, default=None, help="networks per chunk")
    p.add_argument("--out", default=None, help="write nads, eigenvalues, eval_point to a .npz")
    p.add_argument("--npy-dir", default=None, help="write nads.npy, eigenvalues.npy, ... here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from tqdm import tqdm

    from nadcore import ArchitectureError, NADSpec, build_model, run_spec

    if args.out is None and args.npy_dir is None:
        print("nads compute: give --out FILE.npz and/or --npy-dir DIR", file=sys.stderr)
        return 2
    try:
        spec = NADSpec(
            architecture=args.arch, input_shape=args.input_shape, num_networks=args.networks,
            method=args.method, scale=args.scale, seed=args.seed, k=args.k,
            target_stability=args.target_stability, stability_k=args.stability_k,
        )
        build_model(spec.architecture, spec.input_shape)
    except (ValidationError, ArchitectureError) as exc:
        print(f"nads compute: {exc}", file=sys.stderr)
        return 2
    bar = None if args.no_progress else tqdm(total=args.networks, unit="net")

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        result = run_spec(spec, device=args.device, chunk_size=args.chunk_size,
                          progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if args.out:
        result.save_npz(args.out)
    if args.npy_dir:
        result.save_npy_dir(args.npy_dir)
    print(json.dumps(result.summary(head=5), indent=2))
    return 0
