"""The fleet that exists: the workers that beat recently, what they compute on and how fast,
and what that makes of a job's run time (torch-free: the API estimates at submission).

A worker's row (`store.models.Worker`, written by worker/heartbeat.py) holds its processes, the
queues they take, its device and `throughput`: FLOP/s of one process, by job kind, measured
on the kind's finished shards (cost estimate FLOPs / seconds), and `calibration`, a few
LeNet networks' gradients timed at its start, for a kind it has not run yet.

The run time of a job is its shards scheduled greedily on the processes that take users'
work (each shard to the process that finishes it first, shards of equal cost per item), the
queue wait not included (jobs/queue_wait.py adds it, in the job's status). A job whose
estimate exceeds `max_estimated_run_s` is refused unless the request accepts the wait; with
no worker connected, or a cost unknown (a torchvision model no worker has counted:
jobs/architecture_costs.py), nothing is refused and the estimate says why it is unknown. An uploaded
architecture's job is also timed by what its validation measured (`measured_s`, `compute_work`).

A process that has measured nothing yet (a worker in its first seconds, before its calibration
is recorded) counts at the rate ASSUMED for its device kind. The assumed rates are above the
best rate measured on each kind (BENCHMARKS.md: ~40 GFLOP/s on one CPU core at its best, 106
TFLOP/s on an H100), so that an estimate from them is never longer than the measured one will
be: what they refuse is too long on any worker of the kind, and what they let through is
estimated again, measured, by the next submission. The estimate says which it used (`rates`).
Before the first worker connects, a deployment that says which CPU processes it starts
(`expected_cpu_processes`: `nads serve` sets it to its own) is estimated on those at the
assumed rate (`estimating_workers`), so a fresh service refuses from its first second.
A job whose forward passes run in bfloat16 (`precision: bf16`) is timed by rates of its own
(`rate_key`: `nads:bf16`): with native bf16 (a GPU, a CPU with AVX512-BF16 or AMX) it runs at
least as fast as fp32, but a CPU without it emulates bf16, 22-41x slower than fp32
(BENCHMARKS.md, benchmarks/cpu_bf16.py), and one average over both would be wrong for both.
Until such a process has finished a bf16 shard, its bf16 rate is its fp32 rate, divided by
EMULATED_BF16_SLOWDOWN where its calibration said that it emulates bf16 (`native_bf16`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.broker import GPU_QUEUE
from nadcore.specs.ranges import shard_ranges
from store.models import Worker, utcnow
from store.settings import Settings

if TYPE_CHECKING:  # the kinds import this module (jobs/kinds/poison.py)
    from jobs.kinds.base import JobKind

CALIBRATION = "calibration"  # throughput key of the start-up measurement (worker/calibrate.py)
# FLOP/s of one process that has measured nothing yet, by device kind (see the docstring).
ASSUMED_FLOPS_PER_S = {"cpu": 50e9, "cuda": 150e12}
# bf16 against fp32 where a CPU emulates bf16: the least of the slowdowns measured (22-41x for
# DenseNet-121, VGG-11, ResNet-18 on an AVX2-only EPYC), so that, like the assumed rates, it
# refuses no job that a measured rate would let through; the first bf16 shard measures it.
EMULATED_BF16_SLOWDOWN = 22.0
BF16 = "bf16"


def rate_key(kind: str, spec: Mapping[str, Any] | None) -> str:
    """The throughput key that times a job of `kind` with `spec` (a stored spec's JSON): the
    kind, or `<kind>:bf16` for bf16 forward passes (see the module's docstring)."""
    return f"{kind}:{BF16}" if (spec or {}).get("precision") == BF16 else kind


@dataclass(frozen=True)
class Process:
    """One worker process that takes users' shards: its FLOP/s for the kind (measured, else
    ASSUMED for its device kind: `assumed`) and what it runs on."""

    rate: float
    device: str
    gpu: bool
    assumed: bool = False
    emulated_bf16: bool = False  # a bf16 rate derived from an fp32 one by the slowdown


def connected_workers(session: Session, settings: Settings) -> list[Worker]:
    """Workers whose heartbeat is younger than `heartbeat_timeout_s` and that have not said
    they shut down (a worker stopped cleanly counts no more at once: its processes are not
    slots that shards are sent to, nor throughput that estimates count)."""
    since = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s)
    return list(session.scalars(select(Worker).where(Worker.last_seen >= since,
                                                     Worker.stopped_at.is_(None))
                                .order_by(Worker.name)))


def expected_workers(settings: Settings) -> list[Worker]:
    """The CPU processes the deployment says it starts (`expected_cpu_processes`), as one
    unsaved worker row that has measured nothing; none when it says nothing."""
    n = settings.expected_cpu_processes
    return [Worker(name="expected", hostname="", pid=0, processes=n, gpus=0, queues=None,
                   device="starting, not connected yet", throughput=None)] if n else []


def estimating_workers(session: Session, settings: Settings) -> list[Worker]:
    """The workers a run estimate counts: the connected ones, or while none of them takes
    users' shards, the expected ones (`expected_workers`)."""
    workers = connected_workers(session, settings)
    if any(takes_user_shards(w) for w in workers):
        return workers
    return workers + expected_workers(settings)


def takes_user_shards(worker: Worker) -> bool:
    """Shards of users' jobs go to the `gpu` queue (jobs/broker.py); a row without queues
    predates them and took every queue."""
    return worker.queues is None or GPU_QUEUE in worker.queues.split(",")


def missing_dataset(workers: Sequence[Worker], dataset: str) -> str | None:
    """Why no connected worker that takes users' shards can read the named `dataset`, or None
    when one can, when one has not said what it reads (a row from before workers reported
    datasets), or when none is connected (the job waits for workers like any other)."""
    takers = [w for w in workers if takes_user_shards(w)]
    if not takers or any(w.datasets is None or dataset in w.datasets for w in takers):
        return None
    held = sorted({d for w in takers for d in w.datasets or ()})
    return (f"none of the {len(takers)} connected worker(s) can read it (they read "
            f"{', '.join(held) or 'no named dataset'})")


def emulates_bf16(worker: Worker, key: str) -> bool:
    """Whether `key` times bf16 work on a CPU worker whose calibration said that it emulates
    bf16 (no AVX512-BF16 or AMX). A GPU without bf16 (before Ampere) is not slowed by the
    CPU's measured factor: its slowdown is unmeasured, and its first bf16 shard measures it."""
    return key.endswith(f":{BF16}") and worker.native_bf16 is False and not worker.gpus


def rate_of(worker: Worker, key: str) -> tuple[float | None, bool]:
    """FLOP/s of one of the worker's processes for the rate key (`rate_key`): measured on its
    shards, else those of the kind at fp32, else its calibration, a bf16 key's divided by
    EMULATED_BF16_SLOWDOWN where the worker emulates bf16; None when not measured yet. And
    whether it was so divided."""
    throughput = worker.throughput or {}
    if throughput.get(key):
        return float(throughput[key]), False
    rate = throughput.get(key.split(":")[0]) or throughput.get(CALIBRATION)
    if not rate:
        return None, False
    if emulates_bf16(worker, key):
        return float(rate) / EMULATED_BF16_SLOWDOWN, True
    return float(rate), False


def process_rate(worker: Worker, key: str) -> float | None:
    """`rate_of`'s rate alone."""
    return rate_of(worker, key)[0]


def user_processes(workers: Sequence[Worker], key: str) -> list[Process]:
    """One `Process` per process of the workers that take users' shards, at its measured rate
    for the rate key (`rate_key`), else the rate assumed for its device kind."""
    processes = []
    for w in workers:
        if not takes_user_shards(w):
            continue
        device = w.device or "unknown device"
        measured, emulated = rate_of(w, key)
        rate = measured or ASSUMED_FLOPS_PER_S["cuda" if w.gpus > 0 else "cpu"]
        processes += [Process(rate, device, w.gpus > 0, measured is None, emulated)
                      for _ in range(max(1, w.processes))]
    return processes


def emulated_note(processes: Sequence[Process]) -> str:
    """What the estimate assumed of emulated bf16 ('' when nothing)."""
    n = sum(p.emulated_bf16 for p in processes)
    if not n:
        return ""
    return (f"; {n} of the {len(processes)} process(es) emulate bf16 (a CPU without "
            f"AVX512-BF16 or AMX), counted {EMULATED_BF16_SLOWDOWN:.0f}x slower than their "
            "fp32 rate (22-41x measured): precision fp32 runs faster there")


def rates_used(processes: Sequence[Process]) -> str:
    """'measured', 'assumed' (no process has measured anything yet) or 'measured and
    assumed'."""
    assumed = {p.assumed for p in processes}
    return ("measured and assumed" if len(assumed) > 1
            else "assumed" if True in assumed else "measured")


def schedule_s(costs: Sequence[float], rates: Sequence[float]) -> float:
    """Seconds until the last shard ends when each shard (in order) goes to the process that
    would finish it first."""
    free = [0.0] * len(rates)
    for cost in costs:
        best = min(range(len(rates)), key=lambda i: free[i] + cost / rates[i])
        free[best] += cost / rates[best]
    return max(free, default=0.0)


def describe_fleet(processes: Sequence[Process]) -> str:
    """'2 CPU processes (Intel ...) at ~7.9 GFLOP/s each; no GPU worker connected'."""
    groups: Counter[tuple[str, bool, float, bool]] = Counter(
        (p.device, p.gpu, round(p.rate, -6), p.assumed) for p in processes)
    parts = []
    for (device, gpu, rate, assumed), count in groups.items():
        what = "GPU" if gpu else "CPU"
        speed = f"~{rate / 1e9:.1f} GFLOP/s each"
        if assumed:
            speed += (f" (assumed for a {'GPU' if gpu else 'CPU'} until its calibration is "
                      "measured)")
        parts.append(f"{count} {what} process{'es' if count > 1 else ''} ({device}) at {speed}")
    text = ", ".join(parts)
    if not any(p.gpu for p in processes):
        text += "; no GPU worker connected"
    return text


def human_s(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def shard_costs(flops: float, ranges: Sequence[tuple[int, int]]) -> list[float]:
    total = sum(b - a for a, b in ranges) or 1
    return [flops * (b - a) / total for a, b in ranges]


def compute_work(estimate: Mapping[str, Any] | None, processes: Sequence[Process],
          ranges: Sequence[tuple[int, int]]) -> tuple[float, list[float], bool] | None:
    """What a job's run time is computed from: (work, one rate per process, timed). Its FLOPs
    at the processes' measured FLOP/s, or, timed, the seconds validation measured for an
    uploaded architecture at job batch sizes (`measured_s`, on a CPU: jobs/budget.py) at a
    rate of 1 per process. On CPU workers the longer of the two counts (a model whose loops
    count no FLOPs is not estimated at 0 s); on GPU workers the FLOPs do when known (the CPU's
    seconds would refuse what a GPU runs in minutes). None when neither is known."""
    flops, measured = (estimate or {}).get("flops"), (estimate or {}).get("measured_s")
    rates = [p.rate for p in processes]
    by_flops = None if flops is None or not rates else (float(flops), rates, False)
    if measured is None or not processes:
        return by_flops
    timed = (float(measured), [1.0] * len(processes), True)
    if by_flops is None or (not any(p.gpu for p in processes) and
                            schedule_s(shard_costs(timed[0], ranges), timed[1])
                            > schedule_s(shard_costs(by_flops[0], ranges), by_flops[1])):
        return timed
    return by_flops


def run_estimate(key: str, estimate: Mapping[str, Any] | None,
                 ranges: Sequence[tuple[int, int]], workers: Sequence[Worker]) -> dict[str, Any]:
    """`{"run_s": seconds or None, "basis": why, "processes": n, "gpu": bool}` at the rates of
    `key` (`rate_key`), and when estimated, `rates`: whether the processes' rates were
    measured or assumed."""
    processes = user_processes(workers, key)
    base: dict[str, Any] = {"processes": len(processes),
                            "gpu": any(p.gpu for p in processes)}
    if not processes:
        return base | {"run_s": None, "basis": "no worker connected: the job is queued until "
                       "one is; its run time is unknown until then"}
    work = compute_work(estimate, processes, ranges)
    if work is None:
        return base | {"run_s": None, "basis": "the cost of this architecture is not known "
                       "(a torchvision model no worker has counted: none that counts was "
                       "connected, or its count failed; jobs/architecture_costs.py)"}
    fleet = describe_fleet(processes)
    amount, rates, timed = work
    seconds = schedule_s(shard_costs(amount, ranges), rates)
    what = (f"{amount:.3g} s of compute as validation timed the model at job batch sizes"
            if timed else f"{amount:.3g} FLOP")
    flops = (estimate or {}).get("flops")
    return base | {"run_s": round(seconds, 1), "fleet": fleet,
                   "rates": rates_used(processes),
                   **({"flops": flops} if flops is not None else {}),
                   "basis": f"{human_s(seconds)} for {what} on {fleet}"
                   f"{emulated_note(processes)} (the run alone: the wait in the queue is "
                   "the job's `queue`)"}


def largest_fitting(kind: JobKind, estimate: Mapping[str, Any],
                    ranges: Sequence[tuple[int, int]], workers: Sequence[Worker],
                    limit_s: float, key: str | None = None) -> int:
    """The largest item count (the kind's `items`: networks, directions, indices) whose
    estimate fits `limit_s` at the rates of `key` (default: the kind's), at the same cost per
    position and the same number of shards (at most one per item), the kind's extra positions
    included; 0 if none does."""
    positions = sum(b - a for a, b in ranges)
    extra = kind.items.extra
    work = compute_work(estimate, user_processes(workers, key or kind.name), ranges)
    if work is None:
        return 0
    amount, rates, _ = work
    per_position = amount / max(positions, 1)

    def seconds(m: int) -> float:
        return schedule_s(shard_costs(per_position * (m + extra),
                                 shard_ranges(m + extra, min(len(ranges), m))), rates)

    least = kind.items.least
    lo, hi = least - 1, positions - extra
    while lo < hi:  # seconds(m) grows with m
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if seconds(mid) <= limit_s else (lo, mid - 1)
    return lo if lo >= least else 0


class TooLong(ValueError):
    """A job estimated to run past `max_estimated_run_s`; the message says the estimate, why,
    and what would fit (`run`, `fits`, and the job's cost `estimate`)."""

    def __init__(self, message: str, run: Mapping[str, Any], fits: Mapping[str, Any],
                 estimate: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.run, self.fits = dict(run), dict(fits)
        self.estimate = None if estimate is None else dict(estimate)


def check_run_time(kind: JobKind, run: Mapping[str, Any], estimate: Mapping[str, Any] | None,
                   ranges: Sequence[tuple[int, int]], workers: Sequence[Worker],
                   settings: Settings, key: str | None = None) -> None:
    """Raises `TooLong` when the run estimate (at the rates of `key`, default: the kind's)
    exceeds the limit (0: no limit)."""
    limit = settings.max_estimated_run_s
    if not limit or run.get("run_s") is None or run["run_s"] <= limit:
        return
    field, unit = kind.items.field, kind.items.unit
    total = sum(b - a for a, b in ranges) - kind.items.extra
    key = key or kind.name
    fits = largest_fitting(kind, estimate or {}, ranges, workers, limit, key)
    what = (f"at most {fits:,} {unit} (of {total:,}) fit with up to {len(ranges)} shard(s)"
            if fits else f"no number of {unit} fits (use a smaller input_shape or "
            "architecture)")
    other = "" if run.get("gpu") else ", or a GPU worker"
    if any(p.emulated_bf16 for p in user_processes(workers, key)):
        other += ", or precision fp32 (bf16 is emulated on these CPU workers)"
    raise TooLong(
        f"{field}: the estimated run time, {human_s(run['run_s'])}, exceeds the limit of "
        f"{human_s(limit)} (NADS_MAX_ESTIMATED_RUN_S) on the workers connected: "
        f"{run.get('fleet', '?')}; {what}{other}; or submit again with accept_long=true "
        "(CLI: --accept-long) to queue it anyway",
        run, {field: fits, "limit_s": limit}, estimate)
