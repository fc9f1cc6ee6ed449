"""How many worker processes a node runs, and with how many threads each (torch-free).

CPU: one Celery prefork process per usable core (affinity and cgroup quota, nadcore.cores),
each with one intra-op thread: on this 2-core machine two 1-thread processes gave 1.4x the
throughput of one 2-thread process, and two 2-thread processes side by side collapsed to a
quarter of it each (BENCHMARKS.md, Contention). GPU: one process per GPU, child i on cuda:i,
the cores shared out between them. Shards spread over the processes like over any workers.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from jobs.broker import ALL_QUEUES, USER_QUEUES, VALIDATE_QUEUE

VALIDATION_PROCESSES = 1  # of the validation lane (embedded_workers)

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
WAIT_POLICY = "OMP_WAIT_POLICY"
GPUS_VARIABLE = "NADS_WORKER_GPUS"  # set by the launcher; read by each child (pin_gpu)
DEVICE_NODES = "/dev"  # where an NVIDIA driver puts nvidia0, nvidia1, ... (has_nvidia_gpus)


def has_nvidia_gpus() -> bool:
    """Whether this machine (or container) has an NVIDIA GPU's device node: without one, CUDA
    sees no device, which is answered here without importing torch (about 2 s of CPU)."""
    return bool(glob.glob(os.path.join(DEVICE_NODES, "nvidia[0-9]*")))


@dataclass(frozen=True)
class Layout:
    processes: int
    threads: int  # intra-op threads per process
    gpus: int  # 0: a CPU worker

    def env(self) -> dict[str, str]:
        """Variables the worker is started with (before any OpenMP runtime loads)."""
        env = dict.fromkeys(THREAD_VARIABLES, str(self.threads))
        env[GPUS_VARIABLE] = str(self.gpus)
        # Idle OpenMP threads sleep instead of spinning on cores others need: no effect at one
        # thread, several times faster for 2-thread processes on a loaded machine (BENCHMARKS.md,
        # Contention). A value the caller set is kept (worker/launch.py).
        env[WAIT_POLICY] = "PASSIVE"
        return env

    def describe(self) -> str:
        where = f"{self.gpus} GPU(s)" if self.gpus else "CPU"
        return f"{self.processes} process(es) x {self.threads} thread(s) ({where})"


def plan_layout(cores: int, gpus: int = 0, processes: int = 0) -> Layout:
    """`processes` 0: one per core on the CPU, one per GPU; a given count is kept. Threads:
    the cores divided between the processes, at least one."""
    cores, gpus = max(1, cores), max(0, gpus)
    count = processes or (gpus if gpus else cores)
    return Layout(processes=count, threads=max(1, cores // count), gpus=gpus)


def celery_worker_command(layout: Layout, python: str, args: list[str]) -> list[str]:
    """`celery -A worker.app worker` with the layout's concurrency, then the caller's args."""
    return [python, "-m", "celery", "-A", "worker.app", "worker", "--pool", "prefork",
            "--concurrency", str(layout.processes), *args]


def pin_gpu(**_: object) -> None:
    """worker_process_init: child i of a GPU worker computes on cuda:(i mod GPUs)."""
    gpus = int(os.environ.get(GPUS_VARIABLE, "0") or 0)
    if gpus <= 0:
        return
    import torch
    from celery.utils.log import current_process_index

    torch.cuda.set_device((current_process_index(base=0) or 0) % gpus)


def embedded_workers(cores: int, processes: int = 0) -> list[tuple[str, int | None]]:
    """The workers `nads serve` runs: (queues, their share of the cores; None: all).

    First the validation lane: one process that takes only validations of uploaded
    architectures (short, bounded by NADS_ARCHITECTURE_VALIDATION_TIMEOUT_S), beside the
    others, so that an upload validates while every shard slot runs a long shard. Then, with
    2 or more cores and no configured count, one core's worker takes users' work only and the
    others' also the catalog's: a user's job never waits behind a catalog build. On one core a
    single worker takes every queue but validations, first in, first out.
    """
    lane = (VALIDATE_QUEUE, 1)
    if cores < 2 or processes:
        return [lane, (ALL_QUEUES, None)]
    return [lane, (USER_QUEUES, 1), (ALL_QUEUES, cores - 1)]
