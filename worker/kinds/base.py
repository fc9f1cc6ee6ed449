"""What a job kind does in the worker (`worker/kinds/<name>.py`, named by the kind's `worker`
in jobs/kinds): run one shard into a partial that can be saved, and merge the shards' partials
into artifact files and a summary. `worker.tasks` owns the rows, the blobs and the messages;
a runner only computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jobs.budget import Budget
from nadcore.control import Progress, ShouldStop
from store.blobs import Blobs, open_blob_store
from store.settings import get_settings

Files = list[tuple[Path, str]]  # (path, media type) of each artifact
PNG = "image/png"
NPY = "application/octet-stream"


@dataclass(frozen=True)
class Claimed:
    """What a shard task needs once it owns its shard row."""

    job_pk: int
    user_id: int
    kind: str
    spec: dict
    index: int
    shard_id: int
    start: int
    stop: int
    task_id: str | None
    budget: Budget | None = None  # wall time of a shard on an uploaded model (jobs/budget.py)


class Partial(Protocol):
    def save(self, path: Path) -> None: ...


class KindRunner(Protocol):
    """A sharded job runs `run_shard` per shard, then `merge`. A kind whose plan can be
    SEQUENTIAL (jobs/kinds: one task, e.g. a NAD job with early stopping) also defines
    `run_whole(claimed, progress, should_stop)`, returning a result, and
    `result_files(result, folder)`, writing it as `merge` does."""

    def run_shard(self, claimed: Claimed, progress: Progress,
                  should_stop: ShouldStop) -> Partial: ...

    def merge(self, spec: dict, user_id: int, shas: list[str], folder: Path
              ) -> tuple[Files, dict[str, Any]]: ...


class NonFiniteResult(ValueError):
    """A result holds NaN or inf: the job fails instead of succeeding with meaningless arrays."""


def require_finite(**arrays: np.ndarray | None) -> None:
    """Raises `NonFiniteResult` naming the first array holding NaN or inf (None: skipped)."""
    for name, array in arrays.items():
        if array is None:
            continue
        bad = int(np.size(array) - np.isfinite(array).sum())
        if bad:
            raise NonFiniteResult(
                f"{name}: {bad} of {array.size} values are not finite (NaN or inf); the "
                "networks' outputs or gradients overflow or are undefined at these inputs "
                "(check scale, eval_point and the architecture)")


def db_url() -> str:
    return get_settings().resolved_database_url


def blob_store() -> Blobs:
    return open_blob_store(get_settings())


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()
