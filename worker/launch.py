"""`python -m worker.launch [--cores N] [celery worker options]`: `celery -A worker.app worker`,
laid out for this node (worker/layout.py): its concurrency and thread variables set, then
exec'd, so the pid is celery's. `nads serve`'s supervisor and the worker image both start
workers this way. `--cores N`: this worker's share of the usable cores (`nads serve` splits
them between a users-only worker and one that also takes the catalog's shards).
`--concurrency N` (the validation lane's 1): the process count, in place of the layout's
(threads: the share's cores divided between them); celery is given it once.
"""

from __future__ import annotations

import os
import sys

from nadcore.cores import usable_cores
from store.settings import get_settings
from worker.layout import (
    WAIT_POLICY,
    Layout,
    celery_worker_command,
    has_nvidia_gpus,
    plan_layout,
)


def visible_gpus() -> int:
    """CUDA devices this process sees. torch is imported only where the machine has an NVIDIA
    device node (then replaced by exec): a CPU node's workers start 2 s of CPU sooner each."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "" or not has_nvidia_gpus():
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def node_layout(cores: int | None = None, processes: int | None = None) -> Layout:
    usable = usable_cores()
    share = usable if cores is None else max(1, min(cores, usable))
    return plan_layout(share, visible_gpus(), processes or get_settings().worker_processes)


def split_option(argv: list[str], option: str) -> tuple[int | None, list[str]]:
    """`option N` taken out of the arguments (the rest go to celery)."""
    if option not in argv:
        return None, argv
    i = argv.index(option)
    return int(argv[i + 1]), argv[:i] + argv[i + 2:]


def worker_command(argv: list[str]) -> tuple[Layout, list[str], list[str]]:
    """The layout, the celery command it runs and the caller's arguments passed on to it."""
    cores, args = split_option(argv, "--cores")
    processes, args = split_option(args, "--concurrency")
    layout = node_layout(cores, processes)
    return layout, celery_worker_command(layout, sys.executable, args), args


def main(argv: list[str] | None = None) -> None:
    layout, command, args = worker_command(sys.argv[1:] if argv is None else argv)
    print(f"nads worker: {layout.describe()} of {usable_cores()} usable core(s): "
          f"celery worker {' '.join(args)}", flush=True)
    kept = {WAIT_POLICY: os.environ[WAIT_POLICY]} if WAIT_POLICY in os.environ else {}
    os.execve(sys.executable, command, os.environ | layout.env() | kept)


if __name__ == "__main__":
    main()
