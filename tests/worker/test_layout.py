"""Worker layout (worker/layout.py): processes and threads per node, torch-free."""

from __future__ import annotations

import sys

from worker.layout import THREAD_VARIABLES, celery_worker_command, embedded_workers, plan_layout


def test_cpu_node_runs_one_single_thread_process_per_core() -> None:
    layout = plan_layout(cores=2)
    assert (layout.processes, layout.threads, layout.gpus) == (2, 1, 0)
    assert all(layout.env()[name] == "1" for name in THREAD_VARIABLES)
    assert layout.env()["OMP_WAIT_POLICY"] == "PASSIVE"
    assert plan_layout(cores=16).processes == 16
    assert plan_layout(cores=0).processes == 1  # never less than one process


def test_gpu_node_runs_one_process_per_gpu_with_the_cores_shared() -> None:
    layout = plan_layout(cores=16, gpus=4)
    assert (layout.processes, layout.threads, layout.gpus) == (4, 4, 4)
    assert layout.env()["OMP_NUM_THREADS"] == "4"
    assert plan_layout(cores=2, gpus=4).threads == 1


def test_a_configured_count_is_kept_and_threads_follow() -> None:
    layout = plan_layout(cores=2, processes=1)  # the old embedded layout: 1 x 2 threads
    assert (layout.processes, layout.threads) == (1, 2)
    assert plan_layout(cores=2, processes=8).threads == 1


def test_command_sets_the_concurrency_and_keeps_the_callers_options() -> None:
    cmd = celery_worker_command(plan_layout(cores=3), sys.executable, ["-Q", "gpu,cpu", "-B"])
    assert cmd[:6] == [sys.executable, "-m", "celery", "-A", "worker.app", "worker"]
    assert cmd[cmd.index("--concurrency") + 1] == "3"
    assert cmd[-3:] == ["-Q", "gpu,cpu", "-B"]


def test_embedded_mode_keeps_one_core_for_users_jobs_and_a_lane_for_validations() -> None:
    lane = ("validate", 1)  # never taken by the workers that run shards
    assert embedded_workers(cores=2) == [lane, ("gpu,cpu", 1), ("gpu,cpu,catalog", 1)]
    assert embedded_workers(cores=8) == [lane, ("gpu,cpu", 1), ("gpu,cpu,catalog", 7)]
    assert embedded_workers(cores=1) == [lane, ("gpu,cpu,catalog", None)]  # one queue, FIFO
    assert embedded_workers(cores=8, processes=3) == [lane, ("gpu,cpu,catalog", None)]


def test_launcher_takes_its_core_share_out_of_celerys_arguments() -> None:
    from nadcore.cores import usable_cores
    from worker.launch import node_layout, split_cores

    assert split_cores(["--cores", "1", "-Q", "gpu,cpu"]) == (1, ["-Q", "gpu,cpu"])
    assert split_cores(["-Q", "gpu,cpu"]) == (None, ["-Q", "gpu,cpu"])
    assert node_layout(10_000) == node_layout(usable_cores())  # a share never exceeds the node
