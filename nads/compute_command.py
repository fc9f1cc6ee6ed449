"""`nads compute`: estimate NADs from the command line (in this process, no service)."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Annotated

import typer


class MethodChoice(StrEnum):
    finite_difference = "finite-difference"
    autograd = "autograd"


class PrecisionChoice(StrEnum):
    auto = "auto"
    fp32 = "fp32"
    tf32 = "tf32"
    bf16 = "bf16"


def parse_shape(text: str) -> tuple[int, int, int]:
    """'1,32,32' -> (1, 32, 32); a clear error naming the option otherwise."""
    try:
        c, h, w = (int(v) for v in text.split(","))
    except ValueError as exc:
        raise typer.BadParameter(f"expected C,H,W (e.g. 1,32,32), got {text!r}") from exc
    return c, h, w


def compute(
    arch: Annotated[str, typer.Option(help="logreg, lenet, vgg11, resnet18, densenet121 or "
                                      "torchvision:<name>")],
    input_shape: Annotated[str, typer.Option(help="C,H,W")] = "1,32,32",
    networks: Annotated[int, typer.Option(help="number of networks")] = 10_000,
    method: Annotated[MethodChoice, typer.Option()] = MethodChoice.finite_difference,
    scale: Annotated[float, typer.Option(help="finite-difference step")] = 100.0,
    seed: int = 0,
    k: Annotated[int | None, typer.Option(help="NADs kept (default min(D, N-1))")] = None,
    target_stability: Annotated[float | None, typer.Option(
        help="stop once split-half stability at --stability-k reaches this")] = None,
    stability_k: int = 16,
    precision: Annotated[PrecisionChoice, typer.Option(
        help="forward-pass arithmetic (auto: fp32 on a CPU, tf32 on a GPU)")
                         ] = PrecisionChoice.auto,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: cuda if any)")
                      ] = None,
    chunk_size: Annotated[int | None, typer.Option(help="networks per chunk")] = None,
    out: Annotated[str | None, typer.Option(
        help="write nads, eigenvalues, eval_point to a .npz")] = None,
    npy_dir: Annotated[str | None, typer.Option(
        help="write nads.npy, eigenvalues.npy, ... here")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bar")] = False,
) -> None:
    """Estimate the NADs of an architecture."""
    from pydantic import ValidationError
    from tqdm import tqdm

    from nadcore import ArchitectureError, NADSpec, build_model, run_spec

    shape = parse_shape(input_shape)
    if out is None and npy_dir is None:
        print("nads compute: give --out FILE.npz and/or --npy-dir DIR", file=sys.stderr)
        raise typer.Exit(2)
    try:
        spec = NADSpec(
            architecture=arch, input_shape=shape, num_networks=networks, method=method.value,
            scale=scale, seed=seed, k=k, target_stability=target_stability,
            stability_k=stability_k, precision=precision.value,
        )
        build_model(spec.architecture, spec.input_shape)
    except (ValidationError, ArchitectureError) as exc:
        print(f"nads compute: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    bar = None if no_progress else tqdm(total=networks, unit="net")

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        result = run_spec(spec, device=device, chunk_size=chunk_size, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if out:
        result.save_npz(out)
    if npy_dir:
        result.save_npy_dir(npy_dir)
    print(json.dumps(result.summary(head=5), indent=2))


def register(app: typer.Typer) -> None:
    app.command("compute")(compute)
