"""An uploaded architecture named by a job spec (`"architecture": {"id": ...}`), resolved for
the user who submits it.

A job that names an uploaded architecture is stored with the archive's sha256, the init policy
and the output element written into its spec (`ArchitectureRef.sha256`, `.init`, `.output`),
so the stored spec alone determines the networks, even if the architecture is deleted or
re-uploaded later. Costs come from what validation measured (`info.flops`, one forward pass of
one input): the torch-free cost module cannot walk an uploaded model.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.orm import Session

from jobs.errors import SpecError
from jobs.ownership import own_architecture
from nadcore.specs.architecture import ArchitectureRef, parse_init_policy
from store.models import READY

SpecT = TypeVar("SpecT", bound=BaseModel)


def resolve_architecture(session: Session, user_id: int, spec: SpecT, *,
                         networks: int | None = None, outputs: int | None = None,
                         exact_outputs: bool = False,
                         input_shape: tuple[int, ...] | None = None,
                         ) -> tuple[SpecT, dict[str, Any] | None]:
    """For a spec naming an uploaded architecture: checks it is a ready architecture of user
    `user_id` whose input shape is `input_shape` and which has `outputs` outputs (exactly, or
    at least), refuses `init: keep` where `networks` > 1 networks are drawn, and returns the
    spec with the archive's sha256 and the init policy pinned, and the validation info;
    `SpecError` naming the field otherwise. A spec naming a built-in is returned as is, with
    None."""
    ref = getattr(spec, "architecture", None)
    if not isinstance(ref, ArchitectureRef):
        return spec, None
    row = own_architecture(session, user_id, ref.id)
    if row is None:
        raise SpecError("architecture.id", f"no architecture {ref.id!r} of yours", ref.id)
    if row.status != READY:
        why = f": {row.reason}" if row.reason else ""
        raise SpecError("architecture.id", f"architecture {ref.id!r} is {row.status}, not "
                        f"ready{why}", ref.id)
    info = dict(row.info or {})
    if input_shape is not None and list(input_shape) != list(row.input_shape):
        raise SpecError("input_shape", f"{list(input_shape)} differs from the input_shape "
                        f"{list(row.input_shape)} of architecture {ref.id!r}",
                        list(input_shape))
    policy = ref.init or row.init
    if ref.init is not None and ref.init != row.init and parse_init_policy(policy)[0] == \
            "torch-default" and info.get("unknown_params"):
        raise SpecError("architecture.init", "torch-default cannot re-draw "
                        f"{', '.join(info['unknown_params'][:10])}; choose normal:<std>, "
                        "uniform:<bound> or keep", ref.init)
    if policy == "keep" and networks is not None and networks > 1:
        raise SpecError("architecture.init", f"keep is the uploaded network alone, and this "
                        f"job draws {networks} networks; choose torch-default, normal:<std> "
                        "or uniform:<bound>", policy)
    have = int(info.get("num_outputs", 0))
    if outputs is not None and (have < outputs or (exact_outputs and have != outputs)):
        want = f"exactly {outputs}" if exact_outputs else f"at least {outputs}"
        field = "architecture.id" if exact_outputs else "output_index"
        raise SpecError(field, f"architecture {ref.id!r} has {have} output(s); this job needs "
                        f"{want}", have)
    pinned = ArchitectureRef(id=row.id, sha256=row.sha256, init=policy, output=row.output)
    return spec.model_copy(update={"architecture": pinned}), info
