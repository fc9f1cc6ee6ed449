"""What every job kind is, on the torch-free side: its spec, how a spec is admitted and planned
(cost estimate, quota, shard ranges), the unit its progress counts and the figures it renders.
A kind's worker half (running a shard, merging the shards) is `worker/kinds/<name>.py`.

Admission errors are domain errors, not HTTP ones: `SpecError` (a field and why) and
`QuotaError` (an estimate over a limit); the API answers both with 422
(api/errors.py), in pydantic's shape for the first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy.orm import Session

from jobs.architecture_costs import CostPending, kept_count
from jobs.errors import SpecError
from nadcore.specs.architecture import TORCHVISION_PREFIX, ArchitectureRef
from nadcore.specs.layer_counts import LayerCount, layer_count
from store.blobs import Blobs
from store.models import SEQUENTIAL, SHARDED
from store.settings import Settings

__all__ = ["SEQUENTIAL", "SHARDED", "Admission", "Figure", "Items", "JobKind", "Plan", "Quota",
           "QuotaError", "SpecError", "check_limits", "check_upload", "counted_layers",
           "limits", "uploaded_flops"]


class QuotaError(ValueError):
    """A spec whose estimate exceeds a configured limit; the message names both."""

    def __init__(self, message: str, estimate: Mapping[str, Any],
                 limits: Mapping[str, float]) -> None:
        super().__init__(message)
        self.estimate, self.limits = dict(estimate), dict(limits)


@dataclass(frozen=True)
class Figure:
    """A PNG artifact a kind renders, with the caption the web page shows under it."""

    name: str
    caption: str


@dataclass(frozen=True)
class Quota:
    """A limit on one field of a kind's cost estimate (`estimate`), read by `Settings.quota`
    as the setting `name` (NADS_<NAME> in the environment) with its `default` (0 = no limit);
    `what` says what the estimate counts, in the refusal."""

    estimate: str
    name: str
    default: int | float
    what: str

    @property
    def env(self) -> str:
        return f"NADS_{self.name.upper()}"


@dataclass(frozen=True)
class Items:
    """What a kind's shard ranges count, as a refusal for a too long run names them
    (jobs/fleet.py): the spec `field` a smaller job changes and its `unit`; at least `least`
    of them; `extra` positions run past the items (a poison job's clean run)."""

    field: str
    unit: str
    least: int = 1
    extra: int = 0


@dataclass(frozen=True)
class Plan:
    """How an admitted spec runs: `sharded` (one task per range, then a merge) or `sequential`
    (one task), its cost estimate (stored with the job) and the shards' index ranges; `spec`:
    the spec to store, its references pinned (`jobs.sources.pin_nads`), None: as submitted."""

    mode: str
    estimate: dict[str, Any] | None
    ranges: list[tuple[int, int]]
    spec: BaseModel | None = None


@dataclass(frozen=True)
class Admission:
    """What admitting a spec may read: the submitting user's rows, the settings (quotas), the
    blob store (upload headers), an uploaded architecture's validation info (or None),
    the kind's `acceptances` the user gave (e.g. a probe too small to tell a direction from
    chance), and whether a torchvision cost not counted yet may stay unknown."""

    session: Session
    user_id: int
    settings: Settings
    blobs: Blobs
    arch_info: dict[str, Any] | None
    accepted: frozenset[str] = frozenset()  # names of the kind's `acceptances` given
    # a torchvision cost not counted yet is unknown rather than pending: no worker can count
    # it now (jobs/architecture_costs.py)
    uncounted: bool = False


class JobKind(Protocol):
    """One job kind (jobs/kinds/<name>.py defines `KIND`, registered in jobs/kinds/__init__.py).

    `architecture(spec)` gives the constraints an uploaded architecture must meet (keyword
    arguments of `jobs.architectures.resolve_architecture`: networks, outputs,
    exact_outputs, input_shape); `plan` checks everything else and returns the plan, or raises
    `SpecError` / `QuotaError`. `worker` names the module that runs and merges its shards.

    Declared as data, read by the service without naming the kind: `items` (what the shard
    ranges count, jobs/fleet.py), `quotas` (the limits on its estimate and their settings),
    `supports_upload` (whether its `architecture` may name an uploaded architecture, run in the
    sandbox: the worker module then runs those shards through worker/uploaded.py),
    `cli_options` (the `nads submit` options that set its spec's fields, option -> dotted
    field, beyond --arch, --input-shape, --seed and --shards; the CLI reads them from
    GET /v1/kinds), `label` (what the web page calls its jobs: "NAD job"), `web_views`
    (the web page's views of its jobs beyond the generic ones: names of api/web/app.js's
    VIEWS) and `acceptances` (query flags of its submit route beyond `accept_long`, flag ->
    what accepting it does: a refusal of its `plan` the user may waive; `plan` finds the
    flags given in `Admission.accepted`).
    """

    name: str
    spec: type[BaseModel]
    title: str
    unit: str
    figures: tuple[Figure, ...]
    worker: str
    items: Items
    quotas: tuple[Quota, ...]
    supports_upload: bool
    cli_options: Mapping[str, str]
    label: str
    web_views: tuple[str, ...]
    acceptances: Mapping[str, str]

    def architecture(self, spec: Any) -> dict[str, Any]: ...

    def plan(self, spec: Any, admission: Admission) -> Plan: ...


def check_upload(kind: JobKind, spec: BaseModel) -> None:
    """`SpecError` for a spec naming an uploaded architecture when its kind runs built-in
    architectures only (`supports_upload` false: no side of the sandbox child)."""
    if not kind.supports_upload and isinstance(getattr(spec, "architecture", None),
                                               ArchitectureRef):
        raise SpecError("architecture", f"{kind.name} jobs run built-in architectures only, "
                        "not an uploaded one", spec.architecture.id)  # type: ignore[attr-defined]


def limits(quotas: Sequence[Quota], settings: Settings) -> dict[str, float]:
    """The limits by the name of the estimate field they bound (0 = no limit)."""
    return {q.estimate: settings.quota(q.name, q.default) for q in quotas}


def check_limits(estimate: Mapping[str, Any], quotas: Sequence[Quota], settings: Settings,
                 advice: str) -> None:
    """Raises `QuotaError` naming every estimate over its limit (0 = no limit)."""
    bounds = limits(quotas, settings)
    over = []
    for q in quotas:
        value, limit = estimate.get(q.estimate), bounds[q.estimate]
        if limit and value is not None and value > limit:
            over.append(f"estimated {q.estimate} {value:,.0f} ({q.what}) exceeds the limit "
                        f"{limit:,.0f} ({q.env})")
    if over:
        raise QuotaError("spec exceeds the quota: " + "; ".join(over) + "; " + advice,
                         estimate, bounds)


def uploaded_flops(info: dict[str, Any] | None, forward_passes: float) -> float | None:
    """FLOPs of `forward_passes` single-input forward passes of an uploaded architecture."""
    flops = (info or {}).get("flops")
    return None if flops is None else float(flops) * forward_passes


def counted_layers(admission: Admission, architecture: str | ArchitectureRef,
                   input_shape: Sequence[int], num_outputs: int) -> LayerCount | None:
    """One forward pass's MACs, parameters and activations: walked (built-ins), counted by a
    worker (torchvision), or None (an uploaded architecture: its validation info counts; a
    torchvision count not kept while no worker can count it, `admission.uncounted`).
    Raises `SpecError` (input_shape) for a builder that cannot take the shape, `CostPending`
    for a count not kept yet."""
    if isinstance(architecture, ArchitectureRef):
        return None
    if not architecture.startswith(TORCHVISION_PREFIX):
        return layer_count(architecture, tuple(input_shape), num_outputs)
    row = kept_count(admission.session, architecture, input_shape, num_outputs)
    if row is None:
        if admission.uncounted:
            return None
        raise CostPending(architecture, input_shape, num_outputs)
    if row.error is not None:
        raise SpecError("input_shape", row.error, list(input_shape))
    if row.macs is None:  # the worker failed to count it: unknown, as before counts existed
        return None
    return LayerCount(int(row.macs), int(row.params or 0), int(row.activations or 0))
