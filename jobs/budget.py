"""The wall-time budget of a shard on an uploaded architecture (torch-free).

An uploaded model can be slow in ways no FLOP count sees: a loop of element-wise operations
(`prim::Loop`) counts 0 FLOPs, and a model may spin only at a job's batches. So every shard on
an uploaded architecture runs under a budget, and its sandbox is killed past it
(worker/uploaded.py): the larger of `uploaded_budget_floor_s` and `uploaded_budget_factor`
times the shard's expected seconds. The expected seconds are the longer of two estimates:

- the shard's share of the job's FLOPs (the validated `info.flops` per pass) at this worker's
  measured rate for the kind (jobs/fleet.py), and
- the shard's share of `measured_s`: validation's timed seconds per input at the batch sizes
  jobs run (`info.seconds_per_pass`, worker/uploaded.py) times the job's passes.

When neither is known (or both round to nothing) the floor alone holds. The floor pays for a
sandbox's fixed costs (starting Python, importing torch, loading the archive: seconds) and the
factor for the estimate's error on a loaded machine (a rate measured on LeNets, a process
sharing its core: 2-10x, docs/service.md, Time estimates); a model that honestly needs more
than the factor allows should have been refused by `NADS_MAX_ESTIMATED_RUN_S` at submission,
which uses the same measured seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from store.settings import Settings

FLOOR, FACTOR = "NADS_UPLOADED_BUDGET_FLOOR_S", "NADS_UPLOADED_BUDGET_FACTOR"


@dataclass(frozen=True)
class Budget:
    """A shard's wall-time budget in seconds, and how it came about (for the error)."""

    seconds: float
    basis: str


def expected_seconds(estimate: Mapping[str, Any] | None, share: float,
                     rate: float | None) -> float | None:
    """The shard's expected compute seconds: the longer of its FLOPs at `rate` and its share
    of validation's measured seconds; None when neither is known."""
    estimate = estimate or {}
    guesses = []
    flops = estimate.get("flops")
    if flops is not None and rate:
        guesses.append(float(flops) * share / float(rate))
    measured = estimate.get("measured_s")
    if measured is not None:
        guesses.append(float(measured) * share)
    return max(guesses) if guesses else None


def shard_budget(settings: Settings, estimate: Mapping[str, Any] | None, share: float,
                 rate: float | None) -> Budget:
    """The budget of a shard doing `share` (0..1) of its job's work on a process measured at
    `rate` FLOP/s (None: not measured); never past the task's soft time limit."""
    floor, factor = settings.uploaded_budget_floor_s, settings.uploaded_budget_factor
    expected = expected_seconds(estimate, share, rate)
    seconds = floor if expected is None else max(floor, factor * expected)
    if expected is None:
        why = "this shard's cost could not be estimated (no FLOP count, no measured time)"
    else:
        why = f"{factor:g} ({FACTOR}) x this shard's estimated {expected:.3g} s"
    basis = f"the larger of {floor:g} s ({FLOOR}) and {why}"
    limit = settings.task_soft_time_limit_s
    if seconds > limit:
        seconds, basis = float(limit), f"{basis}, capped at {limit} s (NADS_TASK_SOFT_TIME_LIMIT_S)"
    return Budget(round(seconds, 1), basis)


def measured_seconds(arch_info: Mapping[str, Any] | None, passes: float) -> float | None:
    """Seconds of `passes` single-input forward-pass equivalents at the rate validation
    measured at job batch sizes (`info.seconds_per_pass`); None when it did not measure."""
    per_pass = (arch_info or {}).get("seconds_per_pass")
    if not isinstance(per_pass, (int, float)) or per_pass < 0:
        return None
    return round(float(per_pass) * passes, 3)
