"""How the worker turns validation's timings and a shard's budget into sandbox limits
(worker/uploaded.py): the child's timings are capped by the wall time the worker saw."""

from __future__ import annotations

from jobs.budget import Budget
from store.settings import Settings
from worker.uploaded import job_limits, seconds_per_pass


def test_seconds_per_pass_is_the_slowest_job_batch_per_input() -> None:
    info = {"batch_seconds": {"1": 0.5, "3": 0.5, "128": 0.128, "512": 0.256}}
    assert seconds_per_pass(info, wall_s=10.0) == 0.001  # 128 inputs in 0.128 s; 1 and 3 are
    # warm-up and per-call costs, not what jobs run in bulk


def test_claimed_timings_are_capped_by_the_wall_time_the_worker_saw() -> None:
    forged = {"batch_seconds": {"128": 5000.0, "512": 5000.0}}
    assert seconds_per_pass(forged, wall_s=4.0) == 2.0 / 128
    for bad in ({}, {"batch_seconds": "x"}, {"batch_seconds": {"128": -1, "x": 2, "512": True}}):
        assert seconds_per_pass(bad, wall_s=4.0) is None


def test_a_budget_becomes_the_sandboxs_wall_time_and_its_message() -> None:
    settings = Settings()
    budget = Budget(42.0, "the larger of 42 s (NADS_UPLOADED_BUDGET_FLOOR_S) and ...")
    limits = job_limits(settings, 1, 1 << 20, budget)
    assert limits.wall_s == 42.0 and "NADS_UPLOADED_BUDGET_FLOOR_S" in limits.wall_what
    assert job_limits(settings, 1, 1 << 20).wall_s == settings.task_soft_time_limit_s
