"""Uploaded architectures on the API side, torch-free: the form fields of an upload, and the
resolution of `"architecture": {"id": ...}` in a job spec.

A job that names an uploaded architecture is stored with the archive's sha256, the init
policy and the output element written into its spec (`ArchitectureRef.sha256`, `.init`,
`.output`), so the stored spec alone
determines the networks, even if the architecture is deleted or re-uploaded later. Costs come
from what validation measured (`info.flops`, one forward pass of one input): the torch-free
cost module cannot walk an uploaded model.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.orm import Session

from api.validation import invalid
from jobs.ownership import own_architecture
from nadcore.specs.architecture import MAX_INPUT_DIM, ArchitectureRef, parse_init_policy
from store.models import READY, User

SpecT = TypeVar("SpecT", bound=BaseModel)
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


def resolve_architecture(session: Session, user: User, spec: SpecT, *,
                         networks: int | None = None, outputs: int | None = None,
                         exact_outputs: bool = False,
                         input_shape: tuple[int, ...] | None = None,
                         ) -> tuple[SpecT, dict[str, Any] | None]:
    """For a spec naming an uploaded architecture: checks it is a ready architecture of the
    caller whose input shape is `input_shape` and which has `outputs` outputs (exactly, or at
    least), refuses `init: keep` where `networks` > 1 networks are drawn, and returns the spec
    with the archive's sha256 and the init policy recorded, and the validation info.
    A spec naming a built-in is returned as is, with None."""
    ref = getattr(spec, "architecture", None)
    if not isinstance(ref, ArchitectureRef):
        return spec, None
    row = own_architecture(session, user.id, ref.id)
    if row is None:
        raise invalid("architecture.id", f"no architecture {ref.id!r} of yours", ref.id)
    if row.status != READY:
        why = f": {row.reason}" if row.reason else ""
        raise invalid("architecture.id", f"architecture {ref.id!r} is {row.status}, not ready"
                      f"{why}", ref.id)
    info = dict(row.info or {})
    if input_shape is not None and list(input_shape) != list(row.input_shape):
        raise invalid("input_shape", f"{list(input_shape)} differs from the input_shape "
                      f"{list(row.input_shape)} of architecture {ref.id!r}", list(input_shape))
    policy = ref.init or row.init
    if ref.init is not None and ref.init != row.init and parse_init_policy(policy)[0] == \
            "torch-default" and info.get("unknown_params"):
        raise invalid("architecture.init", "torch-default cannot re-draw "
                      f"{', '.join(info['unknown_params'][:10])}; choose normal:<std>, "
                      "uniform:<bound> or keep", ref.init)
    if policy == "keep" and networks is not None and networks > 1:
        raise invalid("architecture.init", f"keep is the uploaded network alone, and this job "
                      f"draws {networks} networks; choose torch-default, normal:<std> or "
                      "uniform:<bound>", policy)
    have = int(info.get("num_outputs", 0))
    if outputs is not None and (have < outputs or (exact_outputs and have != outputs)):
        want = f"exactly {outputs}" if exact_outputs else f"at least {outputs}"
        field = "architecture.id" if exact_outputs else "output_index"
        raise invalid(field, f"architecture {ref.id!r} has {have} output(s); this job needs "
                      f"{want}", have)
    pinned = ArchitectureRef(id=row.id, sha256=row.sha256, init=policy, output=row.output)
    return spec.model_copy(update={"architecture": pinned}), info
