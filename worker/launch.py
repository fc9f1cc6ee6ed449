"""`python -m worker.launch [celery worker options]`: `celery -A worker.app worker`, laid out for
this node (worker/layout.py): its concurrency and thread variables set, then exec'd, so the pid
is celery's. `nads serve`'s supervisor and the worker image both start workers this way.
"""

from __future__ import annotations

import os
import sys

from nadcore.cores import usable_cores
from store.settings import get_settings
from worker.layout import Layout, celery_worker_command, plan_layout


def visible_gpus() -> int:
    """CUDA devices this process sees (torch is imported here, then replaced by exec)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def node_layout() -> Layout:
    return plan_layout(usable_cores(), visible_gpus(), get_settings().worker_processes)


def main(argv: list[str] | None = None) -> None:
    layout = node_layout()
    print(f"nads worker: {layout.describe()}, {usable_cores()} usable core(s)", flush=True)
    command = celery_worker_command(layout, sys.executable, sys.argv[1:] if argv is None else argv)
    os.execve(sys.executable, command, os.environ | layout.env())


if __name__ == "__main__":
    main()
