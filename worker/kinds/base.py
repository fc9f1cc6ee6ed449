"""What a job kind does in the worker (`worker/kinds/<name>.py`, named by the kind's `worker`
in jobs/kinds): say what its spec refers to (`needs`), run one shard into a partial that can be
saved, and merge the shards' partials into artifact files and a summary. A runner only
computes: `worker.tasks` owns the rows, the blobs and the messages, loads the `Inputs` a
runner's `Needs` name (worker/inputs.py) and stores what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from jobs.budget import Budget
from nadcore.control import Progress, ShouldStop

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


@dataclass(frozen=True)
class Needs:
    """What a spec refers to beyond itself, for `worker.tasks` to load into `Inputs` (the
    uploaded architecture's archive is always loaded for a shard of one)."""

    nads: Any = None  # the NAD source named by the spec (job, catalog or upload; its sha256)
    nads_field: str = ""  # where the spec names it ("directions", "nads")
    dataset_upload: str | None = None  # an uploaded dataset's id
    catalog_of: str | None = None  # a merge: the ready catalog entry a result is compared with


@dataclass(frozen=True)
class Reference:
    """A ready catalog entry, for comparing a NAD result with: its name, the `spec` and
    `summary` of the job that built it, and its NAD array."""

    entry: str
    spec: dict[str, Any]
    summary: dict[str, Any]
    nads: np.ndarray


@dataclass(frozen=True)
class Inputs:
    """What `worker.tasks` loaded for a runner from the rows and blobs its spec refers to."""

    archive: Path | None = None  # an uploaded architecture's archive (a shard: None for a built-in)
    nads: np.ndarray | None = None  # the NAD array of `Needs.nads`
    dataset: Path | None = None  # the uploaded dataset's .npz of `Needs.dataset_upload`
    partials: tuple[Path, ...] = ()  # a merge: the shards' partial files, in shard order
    given_name: str | None = None  # a merge: the name the owner gave an uploaded architecture
    source_name: str | None = None  # a merge: what figures call the NAD source
    reference: Reference | None = None  # a merge: the entry of `Needs.catalog_of`, if ready


class Partial(Protocol):
    def save(self, path: Path) -> None: ...


class KindRunner(Protocol):
    """A sharded job runs `run_shard` per shard, then `merge`. A kind whose plan can be
    SEQUENTIAL (one task) has a `WholeJobRunner`."""

    def needs(self, spec: dict) -> Needs: ...

    def run_shard(self, claimed: Claimed, inputs: Inputs, progress: Progress,
                  should_stop: ShouldStop) -> Partial: ...

    def merge(self, spec: dict, inputs: Inputs, folder: Path
              ) -> tuple[Files, dict[str, Any]]: ...


class WholeJobRunner(KindRunner, Protocol):
    """The runner of a kind whose plan can be SEQUENTIAL (jobs/kinds: one task, e.g. a NAD job
    with early stopping): `run_whole` returns the whole result, `result_files` writes it as
    `merge` does (`inputs`: those of a merge)."""

    def run_whole(self, claimed: Claimed, inputs: Inputs, progress: Progress,
                  should_stop: ShouldStop) -> Any: ...

    def result_files(self, result: Any, inputs: Inputs, folder: Path
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


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()
