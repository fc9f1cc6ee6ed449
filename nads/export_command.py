"""`nads export`: write a built-in architecture as an uploadable archive (an example of what
`POST /v1/architectures` takes). `.pt2` (torch.export, preferred) or `.pt` (TorchScript)."""

from __future__ import annotations

import warnings
from pathlib import Path

FORMATS = {".pt": "torchscript", ".pt2": "export"}


def export_architecture(arch: str, input_shape: tuple[int, int, int], out: Path,
                        fmt: str | None = None) -> Path:
    """Build `arch` (a built-in or torchvision name, one output) for `input_shape` and save it
    to `out`: `fmt` "export" writes torch.export.save of a program with a dynamic batch
    dimension, "torchscript" torch.jit.save of torch.jit.script (torch.jit.trace where
    scripting fails). Default format from the suffix: .pt2 -> export, .pt -> torchscript."""
    import torch

    from nadcore.networks.factory import build_model

    out = Path(out)
    fmt = fmt or FORMATS.get(out.suffix)
    if fmt not in FORMATS.values():
        raise ValueError(f"format: {fmt!r} (from {out.name!r}); give --format torchscript or "
                         "export, or an --out ending in .pt or .pt2")
    model = build_model(arch, tuple(input_shape), 1, "cpu").eval()
    example = torch.zeros((2, *input_shape))
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "export":
        program = torch.export.export(model, (example,),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, str(out))
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        try:
            scripted = torch.jit.script(model)
        except Exception:  # noqa: BLE001 (builders TorchScript cannot compile: trace them)
            scripted = torch.jit.trace(model, example)
        torch.jit.save(scripted, str(out))
    return out
