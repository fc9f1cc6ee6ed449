"""Run-time estimates from the connected workers (jobs/fleet.py): the greedy schedule of the
shards on the processes' measured FLOP/s, the refusal past NADS_MAX_ESTIMATED_RUN_S with what
fits, and no refusal when the fleet or the cost is unknown."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from jobs.fleet import (
    ASSUMED_FLOPS_PER_S,
    CALIBRATION,
    EMULATED_BF16_SLOWDOWN,
    TooLong,
    check_run_time,
    connected_workers,
    estimating_workers,
    largest_fitting,
    missing_dataset,
    rate_key,
    run_estimate,
    schedule_s,
)
from jobs.kinds import get_kind
from store.models import Worker, utcnow
from store.settings import Settings


def _worker(name: str, processes: int, throughput: dict | None, gpus: int = 0,
            queues: str = "catalog,cpu,gpu", age_s: float = 0,
            datasets: list[str] | None = None, native_bf16: bool | None = None) -> Worker:
    return Worker(name=name, hostname="h", pid=1, processes=processes, queues=queues,
                  gpus=gpus, device="Test CPU" if not gpus else "Test GPU",
                  throughput=throughput, last_seen=utcnow() - timedelta(seconds=age_s),
                  datasets=datasets, native_bf16=native_bf16)


def test_a_dataset_is_missing_only_when_every_user_worker_said_it_lacks_it() -> None:
    digits = _worker("a", 1, None, datasets=["digits"])
    cifar = _worker("b", 1, None, datasets=["digits", "cifar10"])
    catalog_only = _worker("c", 1, None, queues="catalog", datasets=["digits", "cifar10"])
    silent = _worker("d", 1, None, datasets=None)  # a row from before datasets were reported
    assert missing_dataset([digits, catalog_only], "cifar10") == (
        "none of the 1 connected worker(s) can read it (they read digits)")
    assert missing_dataset([digits, cifar], "cifar10") is None
    assert missing_dataset([digits, silent], "cifar10") is None
    assert missing_dataset([], "cifar10") is None  # the job waits for workers
    assert missing_dataset([digits], "digits") is None


def test_schedule_is_greedy_on_the_fastest_finish() -> None:
    assert schedule_s([2, 2, 2, 2], [1, 1]) == 4  # two rounds of two
    assert schedule_s([3], [1, 3]) == 1  # the fast process takes it
    assert schedule_s([1, 1, 1, 1], [1, 3]) == 1  # three on the fast one, one on the slow


def test_estimate_from_the_kind_measured_else_the_calibration() -> None:
    workers = [_worker("a", 2, {CALIBRATION: 1e9, "probe": 5e8})]
    eight = [(2 * i, 2 * i + 2) for i in range(4)]  # 8 items in 4 shards, 8 GFLOP
    nads = run_estimate("nads", {"flops": 8e9}, eight, workers)
    assert nads["run_s"] == 4.0 and nads["processes"] == 2 and not nads["gpu"]
    assert "2 CPU processes (Test CPU) at ~1.0 GFLOP/s each" in nads["basis"]
    assert "no GPU worker connected" in nads["basis"]
    assert run_estimate("probe", {"flops": 8e9}, eight, workers)["run_s"] == 8.0


def test_unknown_fleet_or_cost_is_said_and_never_refused() -> None:
    settings = Settings(max_estimated_run_s=1)
    ranges = [(0, 10)]
    none = run_estimate("nads", {"flops": 1e15}, ranges, [])
    assert none["run_s"] is None and "no worker connected" in none["basis"]
    check_run_time(get_kind("nads"), none, {"flops": 1e15}, ranges, [], settings)
    workers = [_worker("a", 1, {CALIBRATION: 1e9})]
    torchvision = run_estimate("nads", {"flops": None}, ranges, workers)
    assert torchvision["run_s"] is None and "no worker has counted" in torchvision["basis"]
    check_run_time(get_kind("nads"), torchvision, {"flops": None}, ranges, workers, settings)


def test_a_worker_that_measured_nothing_yet_counts_at_the_rate_assumed_for_its_device() -> None:
    """A fresh service's workers have not calibrated in their first seconds: a clearly too
    long job is refused at the assumed rates, and the estimate says they were assumed."""
    settings = Settings(max_estimated_run_s=3600)
    ranges = [(0, 5000), (5000, 10_000)]
    estimate = {"flops": 2.27e16}  # resnet18, 10,000 networks at 1x32x32
    cpu = [_worker("cpu", 2, None)]
    run = run_estimate("nads", estimate, ranges, cpu)
    assert run["rates"] == "assumed" and run["processes"] == 2, run
    assert run["run_s"] == pytest.approx(2.27e16 / 2 / ASSUMED_FLOPS_PER_S["cpu"], rel=1e-3)
    assert "at ~50.0 GFLOP/s each (assumed for a CPU until its calibration is measured)" \
        in run["basis"], run
    with pytest.raises(TooLong) as caught:
        check_run_time(get_kind("nads"), run, estimate, ranges, cpu, settings)
    assert str(caught.value).startswith("num_networks: the estimated run time"), caught.value
    assert "exceeds the limit of 60.0 min (NADS_MAX_ESTIMATED_RUN_S)" in str(caught.value)
    gpu = run_estimate("nads", estimate, ranges, [_worker("gpu", 1, None, gpus=1)])
    assert gpu["run_s"] == pytest.approx(2.27e16 / ASSUMED_FLOPS_PER_S["cuda"], rel=1e-3)
    assert "assumed for a GPU" in gpu["basis"], gpu
    measured = [_worker("m", 1, {CALIBRATION: 1e9})]
    assert run_estimate("nads", estimate, ranges, measured)["rates"] == "measured"
    assert run_estimate("nads", estimate, ranges, measured + cpu)["rates"] == (
        "measured and assumed")


def test_too_long_is_refused_with_the_estimate_why_and_what_fits() -> None:
    workers = [_worker("a", 2, {CALIBRATION: 1e9})]
    eight = [(2 * i, 2 * i + 2) for i in range(4)]  # 1 GFLOP per item
    estimate = {"flops": 8e9}
    run = run_estimate("nads", estimate, eight, workers)
    settings = Settings(max_estimated_run_s=2)
    with pytest.raises(TooLong) as caught:
        check_run_time(get_kind("nads"), run, estimate, eight, workers, settings)
    message = str(caught.value)
    assert message.startswith("num_networks: the estimated run time, 4 s, exceeds the limit "
                              "of 2 s (NADS_MAX_ESTIMATED_RUN_S)"), message
    assert "no GPU worker connected" in message and "accept_long=true" in message
    # 4 networks in 4 one-network shards: two rounds of 1 s; 5 would need 3 s
    assert caught.value.fits == {"num_networks": 4, "limit_s": 2}
    assert "at most 4 networks (of 8) fit" in message and "or a GPU worker" in message
    assert largest_fitting(get_kind("nads"), estimate, eight, workers, 0.5) == 0
    check_run_time(get_kind("nads"), run, estimate, eight, workers, Settings(max_estimated_run_s=4))
    check_run_time(get_kind("nads"), run, estimate, eight, workers, Settings(max_estimated_run_s=0))


def test_only_workers_that_beat_recently_and_take_users_work_count(session: Session,
                                                                   settings: Settings) -> None:
    session.add_all([_worker("fresh", 2, {CALIBRATION: 1e9}),
                     _worker("stale", 8, {CALIBRATION: 1e12},
                             age_s=settings.heartbeat_timeout_s + 1),
                     _worker("catalog-only", 4, {CALIBRATION: 1e12}, queues="catalog")])
    session.commit()
    workers = connected_workers(session, settings)
    assert [w.name for w in workers] == ["catalog-only", "fresh"]
    run = run_estimate("nads", {"flops": 4e9}, [(0, 1), (1, 2)], workers)
    assert run["processes"] == 2 and run["run_s"] == 2.0


def test_before_any_worker_connects_the_expected_cpu_processes_are_estimated(
        session: Session, settings: Settings) -> None:
    """`nads serve` says which CPU processes it starts: its first seconds, before any worker
    row exists, refuse a clearly too long job at the assumed rate; a deployment that says
    nothing refuses nothing until a worker connects; once one that takes users' shards is
    connected, the expected ones no longer count."""
    ranges = [(0, 5000), (5000, 10_000)]
    estimate = {"flops": 2.27e16}  # resnet18, 10,000 networks at 1x32x32
    expecting = settings.model_copy(update={"expected_cpu_processes": 2,
                                            "max_estimated_run_s": 3600})
    assert estimating_workers(session, settings) == []
    workers = estimating_workers(session, expecting)
    run = run_estimate("nads", estimate, ranges, workers)
    assert run["processes"] == 2 and run["rates"] == "assumed", run
    assert "(starting, not connected yet)" in run["basis"], run
    with pytest.raises(TooLong):
        check_run_time(get_kind("nads"), run, estimate, ranges, workers, expecting)
    session.add(_worker("catalog-only", 4, {CALIBRATION: 1e12}, queues="catalog"))
    session.commit()
    assert [w.name for w in estimating_workers(session, expecting)] == ["catalog-only",
                                                                        "expected"]
    session.add(_worker("users", 1, {CALIBRATION: 1e9}))
    session.commit()
    assert [w.name for w in estimating_workers(session, expecting)] == ["catalog-only",
                                                                        "users"]
    assert session.query(Worker).count() == 2  # the expected row is never stored


def test_a_nad_job_that_fits_has_at_least_two_networks() -> None:
    workers = [_worker("a", 2, {CALIBRATION: 1e9})]
    eight = [(2 * i, 2 * i + 2) for i in range(4)]  # 1 GFLOP per network
    assert largest_fitting(get_kind("nads"), {"flops": 8e9}, eight, workers, 1.0) == 2
    assert largest_fitting(get_kind("nads"), {"flops": 8e9}, eight, workers, 0.99) == 0
    assert largest_fitting(get_kind("probe"), {"flops": 8e9}, eight, workers, 1.0) == 2


def test_a_shard_records_its_throughput_only_when_it_computed_long_enough(
        session: Session, settings: Settings) -> None:
    from worker.calibrate import record, record_shard

    session.add(_worker("w", 1, None))
    session.commit()
    record_shard(settings, "w", "nads", 1e10, 5.0)  # not calibrated yet: nothing to judge by
    record(settings, "w", "Test CPU", CALIBRATION, 2e9)
    record_shard(settings, "w", "nads", 1e6, 2.0)  # 0.5 ms of compute in 2 s: fixed costs
    session.expire_all()
    assert session.get(Worker, "w").throughput == {CALIBRATION: 2e9}
    record_shard(settings, "w", "nads", 1e10, 5.0)  # 5 s of compute: 2 GFLOP/s
    record_shard(settings, "w", "nads", 1e10, 10.0)  # averaged with the last: 1.5
    session.expire_all()
    assert session.get(Worker, "w").throughput == {CALIBRATION: 2e9, "nads": 1.5e9}


def test_a_poison_job_fits_with_its_clean_run() -> None:
    """A poison job's ranges end with its clean run's position: 4 indices train 5 models. What
    fits counts indices, each with the clean run on top."""
    workers = [_worker("a", 2, {CALIBRATION: 1e9})]
    ranges = [(0, 2), (2, 5)]  # 4 indices and the clean run in 2 shards, 1 GFLOP per model
    estimate = {"flops": 5e9}
    run = run_estimate("poison", estimate, ranges, workers)
    assert run["run_s"] == 3.0  # the shard of 3 models
    with pytest.raises(TooLong) as caught:
        check_run_time(get_kind("poison"), run, estimate, ranges, workers,
                       Settings(max_estimated_run_s=2))
    # 3 indices + the clean run: 2 shards of 2 models, 2 s; 4 indices need 3 s
    assert caught.value.fits == {"indices": 3, "limit_s": 2}
    assert "at most 3 indices (of 4) fit" in str(caught.value), str(caught.value)
    # 1 index + the clean run: one shard of 2 models, 2 s at 1 GFLOP/s
    assert largest_fitting(get_kind("poison"), estimate, ranges, workers, 1.99) == 0
    assert largest_fitting(get_kind("poison"), estimate, ranges, workers, 2.0) == 3


def test_a_bf16_job_is_timed_by_bf16_rates_and_emulated_bf16_is_slower() -> None:
    """A CPU without native bf16 emulates it, 22-41x slower than fp32 (benchmarks/cpu_bf16.py):
    a bf16 job there is not estimated at the fp32 rate, the refusal says what runs faster, and
    once a bf16 shard is measured, its rate counts, apart from the fp32 one."""
    assert rate_key("nads", {"precision": "bf16"}) == "nads:bf16"
    assert rate_key("nads", {"precision": "auto"}) == rate_key("nads", None) == "nads"
    eight = [(2 * i, 2 * i + 2) for i in range(4)]  # 8 networks in 4 shards, 8 GFLOP
    estimate = {"flops": 8e9}
    throughput = {CALIBRATION: 1e9}
    emulating = [_worker("a", 2, throughput, native_bf16=False)]
    native = [_worker("b", 2, throughput, native_bf16=True)]
    untold = [_worker("c", 2, throughput, native_bf16=None)]
    fp32 = run_estimate("nads", estimate, eight, emulating)
    bf16 = run_estimate("nads:bf16", estimate, eight, emulating)
    assert fp32["run_s"] == 4.0
    assert bf16["run_s"] == 4.0 * EMULATED_BF16_SLOWDOWN
    assert "2 of the 2 process(es) emulate bf16" in bf16["basis"], bf16["basis"]
    assert "emulate bf16" not in fp32["basis"]
    old_gpu = [_worker("g", 1, throughput, gpus=1, native_bf16=False)]  # unmeasured factor
    for workers in (native, untold, old_gpu):
        run = run_estimate("nads:bf16", estimate, eight, workers)
        assert run["run_s"] == run_estimate("nads", estimate, eight, workers)["run_s"]
        assert "emulate" not in run["basis"]
    limited = Settings(max_estimated_run_s=10)
    check_run_time(get_kind("nads"), fp32, estimate, eight, emulating, limited, "nads")
    with pytest.raises(TooLong) as caught:
        check_run_time(get_kind("nads"), bf16, estimate, eight, emulating, limited, "nads:bf16")
    assert "or precision fp32 (bf16 is emulated" in str(caught.value), str(caught.value)
    assert caught.value.fits == {"num_networks": 0, "limit_s": 10}
    # a measured bf16 rate replaces the derived one; the fp32 one stays the fp32 jobs'
    measured = [_worker("a", 2, throughput | {"nads": 2e9, "nads:bf16": 1e8}, native_bf16=False)]
    run = run_estimate("nads:bf16", estimate, eight, measured)
    assert run["run_s"] == 40.0 and "emulate" not in run["basis"]
    assert run_estimate("nads", estimate, eight, measured)["run_s"] == 2.0
    # before its first bf16 shard, the kind's fp32 rate is what is divided
    fp32_only = [_worker("a", 2, throughput | {"nads": 2e9}, native_bf16=False)]
    assert run_estimate("nads:bf16", estimate, eight, fp32_only)["run_s"] == (
        2.0 * EMULATED_BF16_SLOWDOWN)


def test_the_calibration_records_native_bf16_and_bf16_shards_apart(
        session: Session, settings: Settings) -> None:
    from worker.calibrate import record, record_shard

    session.add(_worker("w", 1, None))
    session.commit()
    record(settings, "w", "Test CPU", CALIBRATION, 2e9, native_bf16=False)
    record_shard(settings, "w", "nads", 1e10, 5.0)
    record_shard(settings, "w", "nads:bf16", 1e10, 100.0)
    session.expire_all()
    row = session.get(Worker, "w")
    assert row.native_bf16 is False
    assert row.throughput == {CALIBRATION: 2e9, "nads": 2e9, "nads:bf16": 1e8}
