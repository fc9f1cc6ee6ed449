"""Which dimension of a declared input shape an uploaded model disagrees with.

When an uploaded network raises on a batch of the declared (C, H, W), the reason should name
the dimension, not the model's own words alone:
- a torch.export program records the shape it was exported for (the placeholder's example
  value: symbolic where exported as dynamic, an integer where static), so every disagreeing
  dimension is known exactly, the batch dimension included;
- a TorchScript module records no shapes; its first convolution's error names the channels it
  expects, and a linear layer that gets the wrong number of features means that the height or
  width differ from what the model was built for.
"""

from __future__ import annotations

import re

import torch
from torch import nn

DIMENSIONS = ("channels", "height", "width")
# The model's own text is quoted only as numbers of at most 9 digits.
_CONV_CHANNELS = re.compile(
    r"expected input\[[^\]]*\] to have (\d{1,9}) channels, but got (\d{1,9})")
_MATMUL = re.compile(
    r"mat1 and mat2 shapes cannot be multiplied \((\d{1,9})x(\d{1,9}) and (\d{1,9})x(\d{1,9})\)")


def exported_input_shape(net: nn.Module) -> tuple[int | None, ...] | None:
    """The shape of an exported program's first input, None for a symbolic (dynamic) size;
    None when the module records no such shape (TorchScript)."""
    graph = getattr(net, "graph", None)
    if not isinstance(graph, torch.fx.Graph):  # TorchScript's graph records no shapes
        return None
    for node in graph.nodes:
        if node.op == "placeholder":
            shape = getattr(node.meta.get("val"), "shape", None)
            if shape is None:
                return None
            return tuple(d if isinstance(d, int) else None for d in shape)
    return None


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("batch" if d is None else str(d) for d in shape) + ")"


def shape_mismatch(net: nn.Module, fmt: str, input_shape: tuple[int, int, int],
                   batch: int, error: BaseException) -> str | None:
    """A reason starting with `input_shape:` that names the disagreeing dimensions, or None
    when the failure is not a shape mismatch this can tell (the caller then quotes the error)."""
    declared = ",".join(map(str, input_shape))
    if fmt == "export":
        expected = exported_input_shape(net)
        if expected is None or len(expected) != 1 + len(input_shape):
            return None
        wrong = [f"{name}: declared {have}, the program takes {want}"
                 for name, have, want in zip(DIMENSIONS, input_shape, expected[1:], strict=True)
                 if want is not None and want != have]
        if wrong:
            fixed = ",".join(str(have if want is None else want)
                             for have, want in zip(input_shape, expected[1:], strict=True))
            return (f"input_shape: {declared} disagrees with the uploaded program in "
                    f"{'; '.join(wrong)} (it was exported for inputs of shape "
                    f"{_shape_text(expected)}); declare input_shape {fixed}, or export the "
                    "model for the shape you want")
        if expected[0] is not None and expected[0] != batch:
            return (f"file: the program was exported for a fixed batch of {expected[0]} and "
                    f"jobs run batches of other sizes ({batch} here); export it with a dynamic "
                    "batch dimension: dynamic_shapes=({0: torch.export.Dim('batch')},)")
        return None
    text = str(error)
    m = _CONV_CHANNELS.search(text)
    if m and int(m.group(1)) != input_shape[0]:
        fixed = ",".join(map(str, (int(m.group(1)), *input_shape[1:])))
        return (f"input_shape: {declared} disagrees with the uploaded network in channels: "
                f"declared {input_shape[0]}, its first convolution takes {m.group(1)}; declare "
                f"input_shape {fixed}")
    m = _MATMUL.search(text)
    if m:
        return (f"input_shape: {declared} disagrees with the uploaded network in height or "
                f"width: at H x W = {input_shape[1]} x {input_shape[2]} its features reach a "
                f"linear layer as {m.group(2)} values where it takes {m.group(3)}, so the model "
                "was built for another height or width; declare the shape it was built for")
    return None
