"""Probe jobs, torch-free side: how well an architecture learns D(v) along chosen directions
(`nadcore.probe.spec.ProbeSpec`). How many directions a spec selects (the shards are ranges of
direction indices), what it costs, and whether the NAD job it refers to can be probed.

`count_directions` mirrors `nadcore.probe.directions.make_directions` row for row without
building any direction (the service tests check it against the engine).
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy.orm import Session

from jobs.budget import measured_seconds
from jobs.kinds.base import (
    SHARDED,
    Admission,
    Figure,
    Items,
    Plan,
    Quota,
    SpecError,
    check_limits,
    counted_layers,
    uploaded_flops,
)
from jobs.sources import NADSource, pin_nads, resolve_nads
from nadcore.probe.fourier_grid import grid, half_plane
from nadcore.probe.power import assess as assess_power
from nadcore.probe.power import refusal
from nadcore.probe.spec import (
    PRESET_NOTES,
    CustomDirections,
    FourierDirections,
    NADDirections,
    ProbeSpec,
    RandomDirections,
)
from nadcore.specs.layer_counts import LayerCount, layer_count
from nadcore.specs.ranges import shard_ranges
from store.settings import Settings

# The paper's full 32 x 32 Fourier grid with its recipe (1024 directions, 20 epochs, 10,000
# samples) is 2.0e8 training samples, 9.1e17 FLOPs with ResNet-18.
QUOTAS = (
    Quota("train_samples", "max_probe_train_samples", 1_000_000_000,
          "directions x replicates x epochs x num_train"),
    Quota("flops", "max_probe_flops", 1e18, "training and test passes"),
    Quota("directions_bytes", "max_probe_directions_bytes", 2**30, "directions x C*H*W x 4"),
)


def count_directions(spec: ProbeSpec) -> int:
    """Number of rows `make_directions(spec)` returns: fourier -> its frequencies (the list, or
    the grid's half-plane: `nadcore.probe.fourier_grid`), nad -> its rows, random -> count, custom
    -> its values. The job trains `spec.units(count)` networks (directions x replicates)."""
    d = spec.directions
    _, h, w = spec.input_shape
    if isinstance(d, FourierDirections):
        if d.frequencies is not None:
            return len(d.frequencies)
        return len(half_plane(grid(h, w, d.grid_stride), h, w, d.phase))
    if isinstance(d, NADDirections):
        return d.count()  # arithmetic: a range is never built
    if isinstance(d, RandomDirections):
        return d.count
    if isinstance(d, CustomDirections):
        return len(d.values)
    raise TypeError(f"unknown directions kind {type(d).__name__}")


def check_shape(spec: ProbeSpec, num_directions: int) -> None:
    """What the spec alone does not check: every direction is a non-zero finite vector, there
    is at least one, and no more shards than directions."""
    d = spec.directions
    if isinstance(d, CustomDirections):
        for i, row in enumerate(d.values):
            if not all(math.isfinite(v) for v in row):
                raise SpecError("directions.values", f"row {i} has non-finite values")
            if not any(row):
                raise SpecError("directions.values",
                              f"row {i} is zero; a direction needs a non-zero vector")
    if num_directions < 1:
        raise SpecError("directions", "selects no direction; give at least one")
    if spec.shards > spec.units(num_directions):
        raise SpecError("shards", f"{spec.shards} exceeds the number of trainings = "
                      f"{spec.units(num_directions)} (directions x replicates)", spec.shards)


def estimate_probe(spec: ProbeSpec, num_directions: int,
                   arch_info: dict[str, Any] | None = None,
                   count: LayerCount | None = None) -> dict[str, Any]:
    """Directions (each once: a Fourier grid counts its half-plane), trainings (directions x
    replicates), training samples, FLOPs (None for torchvision models) and the size of
    directions.npy. `count`: a torchvision builder's forward pass (jobs/architecture_costs.py),
    by default the walk of a built-in.

    A training step counts as three forward passes (forward and backward), a test evaluation
    (every epoch, for the curves) as one.
    """
    c, h, w = spec.input_shape
    epochs, num_train, num_test = spec.training.epochs, spec.data.num_train, spec.data.num_test
    if count is None:
        count = layer_count(spec.architecture, spec.input_shape, 2)
    trainings = spec.units(num_directions)
    passes = trainings * epochs * (3 * num_train + num_test)
    flops = None if count is None else 2.0 * count.macs * passes
    params = None if count is None else count.params
    if arch_info is not None:  # an uploaded architecture: what its validation measured
        flops, params = uploaded_flops(arch_info, passes), arch_info.get("num_params")
    estimate = {
        "directions": num_directions,
        "replicates": spec.replicates,
        "trainings": trainings,
        "train_samples": trainings * epochs * num_train,
        "flops": flops,
        "parameters": params,
        "directions_bytes": num_directions * c * h * w * 4,
    }
    if arch_info is not None:  # validation's timing at job batch sizes (jobs/budget.py)
        estimate["measured_s"] = measured_seconds(arch_info, passes)
    return estimate


def check_power(spec: ProbeSpec, estimate: dict[str, Any], accepted: bool) -> None:
    """Puts `nadcore.probe.power`'s answer in the estimate (`power`) and refuses a probe that
    cannot separate a learnable direction from chance, unless the user accepted it."""
    data = spec.data
    power = assess_power(data.num_train, spec.training.epochs, data.num_test,
                         data.epsilon / data.sigma, math.prod(spec.input_shape))
    power["accepted"] = bool(accepted and power["can_separate"] is False)
    note = PRESET_NOTES.get(spec.preset or "")
    if note:
        power["preset"] = note
    estimate["power"] = power
    if power["can_separate"] is False and not accepted:
        field, reason = refusal(power, data.num_test)
        raise SpecError(field, reason)


def check_probe_quota(estimate: dict[str, Any], settings: Settings) -> None:
    """Raises `QuotaError` naming every exceeded estimate and its limit."""
    check_limits(estimate, QUOTAS, settings,
                 "reduce the directions, training.epochs or data.num_train")


def check_nad_source(session: Session, user_id: int, spec: ProbeSpec) -> NADSource | None:
    """For `nad` directions: the NAD result (`jobs.sources.resolve_nads`: the caller's
    succeeded NAD job, or a ready catalog entry) holds every requested row, and its inputs have
    the probe's shape; returns it (None for other directions)."""
    d = spec.directions
    if not isinstance(d, NADDirections):
        return None
    source = resolve_nads(session, user_id, d, "directions", "be probed")
    check_source_rows(spec, d, source.spec, source.summary, source.what)
    return source


def check_source_rows(spec: ProbeSpec, d: NADDirections, source_spec: dict[str, Any],
                      summary: dict[str, Any] | None, what: str) -> None:
    """The NAD source (`what`: a NAD job or a catalog entry) is on the probe's input shape and
    holds every requested row."""
    if tuple(source_spec["input_shape"]) != tuple(spec.input_shape):
        raise SpecError("input_shape", f"{list(spec.input_shape)} differs from the input_shape "
                      f"{list(source_spec['input_shape'])} of {what}", list(spec.input_shape))
    num_nads = int((summary or {}).get("num_nads", 0))
    top = d.max_row()
    if top >= num_nads:
        field = "directions.indices" if d.indices is not None else "directions.stop"
        raise SpecError(field, f"row {top} is out of range: {what} has "
                      f"{num_nads} NADs (rows 0 to {num_nads - 1})")


class ProbeKind:
    name = "probe"
    spec = ProbeSpec
    title = ("Queues a probe job: `shards` tasks, each training a range of directions, and a "
             "merge.\n\nBody: the engine's `ProbeSpec` (architecture, input_shape, directions "
             "with `kind` fourier, nad, random or custom, data, training, seed, shards). `nad` "
             "directions name one of the caller's succeeded NAD jobs in `directions.job`.")
    unit = "directions"
    figures = (
        Figure("heatmap.png", "Test accuracy on D(v) over the frequencies probed (signed "
               "frequencies; grey: on the grid but not probed; DC outlined)."),
        Figure("accuracy_vs_index.png", "Test accuracy on D(u_i), one point per NAD index i "
               "probed."),
        Figure("curves.png", "Training curves (curves.npy): loss and accuracy per epoch, train "
               "and test; one line per direction, or the median and a band for many."),
    )
    worker = "worker.kinds.probe"
    items = Items("directions", "directions")
    quotas = QUOTAS
    supports_upload = True
    label = "probe"
    web_views = ("probe-facts",)
    acceptances = {"accept_underpowered": (
        "Queue a probe even when its sizes cannot separate a learnable direction from chance "
        "(otherwise a 422 with the smallest sizes that can; the answer is under "
        "`estimate.power` either way).")}
    cli_options = {"directions": "directions.kind", "nad-job": "directions.job",
                   "count": "directions.count", "grid-stride": "directions.grid_stride",
                   "epochs": "training.epochs", "preset": "preset"}

    def unit_of(self, spec: dict[str, Any]) -> str:
        """What a stored spec's progress counts: directions, or trainings with replicates."""
        replicates = int((spec or {}).get("replicates", 1))
        return self.unit if replicates == 1 else f"trainings ({replicates} per direction)"

    def architecture(self, spec: ProbeSpec) -> dict[str, Any]:
        return {"outputs": 2, "exact_outputs": True, "input_shape": spec.input_shape}

    def plan(self, spec: ProbeSpec, admission: Admission) -> Plan:
        num_directions = count_directions(spec)
        check_shape(spec, num_directions)
        count = counted_layers(admission, spec.architecture, spec.input_shape, 2)
        estimate = estimate_probe(spec, num_directions, admission.arch_info, count)
        check_probe_quota(estimate, admission.settings)
        source = check_nad_source(admission.session, admission.user_id, spec)
        check_power(spec, estimate, "accept_underpowered" in admission.accepted)
        pinned = spec if source is None else spec.model_copy(
            update={"directions": pin_nads(spec.directions, source)})
        return Plan(SHARDED, estimate, shard_ranges(spec.units(num_directions), spec.shards),
                    pinned)


KIND = ProbeKind()
