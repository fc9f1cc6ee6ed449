"""Time budgets of shards on uploaded architectures (jobs/budget.py) and the run estimate
from validation's measured seconds (jobs/fleet.py): arithmetic, and the defaults' sense."""

from __future__ import annotations

import pytest

from jobs.budget import measured_seconds, shard_budget
from jobs.fleet import check_run_time, run_estimate
from jobs.kinds import get_kind
from store.models import Worker, utcnow
from store.settings import Settings

SETTINGS = Settings(uploaded_budget_floor_s=5, uploaded_budget_factor=3)


def _worker(rate: float | None, processes: int = 2, gpus: int = 0) -> Worker:
    return Worker(name="w", hostname="h", pid=1, processes=processes, queues="cpu,gpu",
                  gpus=gpus, last_seen=utcnow(),
                  throughput=None if rate is None else {"calibration": rate})


def test_a_shard_whose_cost_is_unknown_gets_the_floor_named_in_its_basis() -> None:
    for estimate in (None, {"flops": None}, {"flops": 1e9}):  # FLOPs without a rate: unknown
        budget = shard_budget(SETTINGS, estimate, 0.5, None)
        assert budget.seconds == 5
        assert "NADS_UPLOADED_BUDGET_FLOOR_S" in budget.basis
        assert "could not be estimated" in budget.basis
    # a loop model counts 0 FLOPs: estimated at 0 s, the floor holds
    assert shard_budget(SETTINGS, {"flops": 0.0}, 1.0, 1e9).seconds == 5


def test_the_longer_of_flops_and_measured_seconds_times_the_factor() -> None:
    # 4e10 FLOP, half of it at 1e9 FLOP/s: 20 s; validation timed the job at 50 s: 25 s
    budget = shard_budget(SETTINGS, {"flops": 4e10, "measured_s": 50.0}, 0.5, 1e9)
    assert budget.seconds == 75  # 3 x 25 s
    assert "NADS_UPLOADED_BUDGET_FACTOR" in budget.basis and "25 s" in budget.basis
    assert shard_budget(SETTINGS, {"flops": 4e10, "measured_s": 2.0}, 0.5, 1e9).seconds == 60
    assert shard_budget(SETTINGS, {"flops": None, "measured_s": 8.0}, 1.0, None).seconds == 24


def test_a_budget_never_passes_the_task_time_limit() -> None:
    budget = shard_budget(SETTINGS.model_copy(update={"task_soft_time_limit_s": 100}),
                          {"measured_s": 1000.0}, 1.0, None)
    assert budget.seconds == 100 and "NADS_TASK_SOFT_TIME_LIMIT_S" in budget.basis


def test_the_defaults_kill_a_sleeper_in_minutes_and_let_real_work_finish() -> None:
    """Defaults: a 300 s floor (a sandbox's start, imports and loading are seconds) and 10x
    the estimate (estimates on a loaded CPU were off by up to ~10x: docs/service.md)."""
    default = Settings()
    assert (default.uploaded_budget_floor_s, default.uploaded_budget_factor) == (300, 10)
    assert default.preempt_after_s == 60
    assert shard_budget(default, {"flops": 0.0}, 1.0, 4e9).seconds == 300  # a sleeper
    # a LeNet NAD job of 2,000 networks at 1x32x32 (5.4e12 FLOP) at 2 GFLOP/s: 45 min
    assert shard_budget(default, {"flops": 5.4e12}, 1.0, 2e9).seconds == 6 * 3600  # capped
    assert shard_budget(default, {"flops": 5.4e12}, 0.1, 2e9).seconds == 2700  # one of 10


def test_measured_seconds_scale_with_passes_and_ignore_garbage() -> None:
    assert measured_seconds({"seconds_per_pass": 0.002}, 1000) == 2.0
    for info in (None, {}, {"seconds_per_pass": None}, {"seconds_per_pass": -1},
                 {"seconds_per_pass": "1"}):
        assert measured_seconds(info, 1000) is None


def test_the_run_estimate_counts_validations_measured_seconds() -> None:
    """A model whose FLOPs say ~0 is no longer estimated at 0 s: on CPU workers the longer of
    the two estimates counts, and the limit refuses it."""
    ranges = [(0, 2), (2, 4)]
    cpu = [_worker(1e9)]
    run = run_estimate("nads", {"flops": 1e3, "measured_s": 400.0}, ranges, cpu)
    assert run["run_s"] == 200  # two shards of 200 s on two processes
    assert "validation timed" in run["basis"]
    run = run_estimate("nads", {"flops": 4e12, "measured_s": 40.0}, ranges, cpu)
    assert run["run_s"] == 2000 and "FLOP" in run["basis"]
    run = run_estimate("nads", {"flops": None, "measured_s": 40.0}, ranges, [_worker(None)])
    assert run["run_s"] == 20  # no rate measured yet: the timing alone
    gpu = [_worker(1e12, processes=1, gpus=1)]  # the CPU's seconds would mislead a GPU's
    assert run_estimate("nads", {"flops": 1e3, "measured_s": 400.0}, ranges, gpu)["run_s"] < 1
    limited = Settings(max_estimated_run_s=100)
    estimate = {"flops": 1e3, "measured_s": 400.0}
    run = run_estimate("nads", estimate, ranges, cpu)
    with pytest.raises(ValueError, match="NADS_MAX_ESTIMATED_RUN_S") as refused:
        check_run_time(get_kind("nads"), run, estimate, ranges, cpu, limited)
    assert refused.value.fits == {"num_networks": 2, "limit_s": 100}  # 2 networks: 2 x 100 s
