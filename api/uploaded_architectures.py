"""The form fields of an architecture upload, torch-free, each parsed or refused with a 422
naming the field. A job spec naming an uploaded architecture is resolved by
`jobs.architectures.resolve_architecture`."""

from __future__ import annotations

import re

from api.validation import invalid
from nadcore.specs.architecture import MAX_INPUT_DIM, parse_init_policy

_SHAPE_LIMITS = (16, 512, 512)  # C, H, W as in NADSpec.input_shape
_OUTPUT = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # as ArchitectureRef.output


def parse_input_shape(text: str) -> list[int]:
    """'C,H,W' -> [C, H, W] within NADSpec's limits; 422 naming `input_shape` otherwise."""
    parts = [p.strip() for p in text.strip().strip("()[]").split(",") if p.strip()]
    try:
        shape = [int(p) for p in parts]
    except ValueError:
        shape = []
    if len(shape) != 3:
        raise invalid("input_shape", f"{text!r} is not C,H,W (three integers, e.g. 1,32,32)",
                      text)
    for name, value, top in zip("CHW", shape, _SHAPE_LIMITS, strict=True):
        if not 1 <= value <= top:
            raise invalid("input_shape", f"{name} = {value} is outside 1..{top}", text)
    if shape[0] * shape[1] * shape[2] > MAX_INPUT_DIM:
        raise invalid("input_shape", f"C*H*W exceeds the limit {MAX_INPUT_DIM}", text)
    return shape


def parse_policy(text: str | None) -> str:
    policy = (text or "torch-default").strip()
    try:
        parse_init_policy(policy)
    except ValueError as exc:
        raise invalid("init", str(exc).removeprefix("init: "), text) from None
    return policy


def parse_output(text: str | None) -> str | None:
    """The upload's `output` (an index of a tuple or list output, or a key of a dict output),
    None when not given; 422 naming `output` otherwise."""
    value = (text or "").strip()
    if not value:
        return None
    if not _OUTPUT.fullmatch(value):
        raise invalid("output", "an index (0, 1, ...) or a key of 1 to 100 letters, digits and "
                      ". _ - naming the element of the network's tuple, list or dict output",
                      text)
    return value
