"""Worker layout (worker/layout.py): processes and threads per node, torch-free."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from worker.layout import THREAD_VARIABLES, celery_worker_command, embedded_workers, plan_layout

ROOT = Path(__file__).resolve().parents[2]


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
    from worker.launch import node_layout, split_option

    assert split_option(["--cores", "1", "-Q", "gpu,cpu"], "--cores") == (1, ["-Q", "gpu,cpu"])
    assert split_option(["-Q", "gpu,cpu"], "--cores") == (None, ["-Q", "gpu,cpu"])
    assert node_layout(10_000) == node_layout(usable_cores())  # a share never exceeds the node


def after_launch(command: list[str]) -> list[str]:
    return command[command.index("worker.launch") + 1:]


def validation_lane_arguments(data: Path) -> dict[str, list[str]]:
    """What docker-compose.yml's `validator` and `nads serve`'s lane pass to worker.launch."""
    from jobs.broker import VALIDATE_QUEUE
    from nads.service_commands import WorkerSupervisor
    from store.settings import Settings

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    validator = compose["services"]["validator"]["command"]
    lane = WorkerSupervisor(Settings(data_dir=data), queues=VALIDATE_QUEUE).command
    return {"docker-compose": after_launch(validator), "nads serve": after_launch(lane)}


@pytest.mark.parametrize("where", ["docker-compose", "nads serve"])
def test_the_validation_lane_says_its_concurrency_once(where: str, tmp_path: Path) -> None:
    """`--concurrency 1` given to the launcher is the layout's process count, not a second
    option after the layout's own (celery took the last, and the log line said both)."""
    from worker.launch import worker_command

    layout, command, _ = worker_command(validation_lane_arguments(tmp_path)[where])
    assert command.count("--concurrency") == 1
    assert command[command.index("--concurrency") + 1] == "1"
    assert layout.processes == 1


LAUNCHER_GPUS = """
import sys
import worker.layout
worker.layout.DEVICE_NODES = sys.argv[1]
from worker.launch import visible_gpus
print(visible_gpus(), "torch" in sys.modules)
"""


@pytest.mark.parametrize(("nodes", "torch_asked"), [
    ([], False), (["nvidiactl", "nvidia-uvm"], False), (["nvidiactl", "nvidia0"], True)])
def test_launcher_asks_torch_for_gpus_only_where_an_nvidia_gpu_node_exists(
        tmp_path: Path, nodes: list[str], torch_asked: bool) -> None:
    """Importing torch costs each worker's start about 2 s of CPU, spent for nothing where no
    GPU device node exists (CUDA sees no device without one)."""
    import subprocess

    for name in nodes:
        (tmp_path / name).touch()
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    out = subprocess.run([sys.executable, "-c", LAUNCHER_GPUS, str(tmp_path)], cwd=ROOT,
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    count, imported = int(out[0]), out[1] == "True"
    assert imported == torch_asked
    if not torch_asked:
        assert count == 0
