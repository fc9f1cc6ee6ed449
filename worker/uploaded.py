"""Work on users' uploaded architectures: validation and shards, each in the sandbox
(`worker/sandbox.py`), with every answer checked before the service keeps it. A job kind that
runs uploaded architectures calls `run_kind` from its worker module (worker/kinds/<kind>.py:
`sandboxed_shard`) and checks its partial with the checks here.

The sandbox returns bytes that a hostile model may have written, so each result is bounded by
what the spec asks for (the frame's length, then the .npz's declared and header sizes, before
anything is decompressed: `store.npz.read_npz`), loaded with allow_pickle=False, its ranges,
shapes and keys compared with what the spec asks for, every
float checked finite (a NaN or inf fails the job, naming the shard), and its free-form `info`
reduced to short, escaped scalars. Built-in architectures never come here.
"""

from __future__ import annotations

import io
import math
import mmap
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydantic import BaseModel

from jobs.budget import Budget
from nadcore.control import Progress, ShouldStop
from nadcore.uploaded.validation import TRAINING_BATCH, excerpt
from store.npz import ArchiveError, read_npz
from store.settings import Settings
from worker.kinds.base import NonFiniteResult, require_finite
from worker.sandbox import Limits, Outcome, SandboxError, run_sandboxed

RESULT_SLACK = 1 << 20  # of a result past its arrays: .npy and zip headers, JSON meta


def result_bytes(*elements: int) -> int:
    """The most bytes a result of arrays of these element counts may hold (8 bytes each)."""
    return 8 * sum(elements) + RESULT_SLACK


def job_limits(settings: Settings, threads: int, max_result_bytes: int,
               budget: Budget | None = None) -> Limits:
    """A shard's sandbox: its memory, its result's size, and its wall-time budget
    (jobs/budget.py; without one, the task's soft time limit)."""
    wall_s = settings.task_soft_time_limit_s if budget is None else budget.seconds
    return Limits(wall_s=wall_s,
                  memory_bytes=settings.sandbox_memory_bytes, threads=threads,
                  scratch_bytes=settings.sandbox_scratch_bytes,
                  max_result_bytes=max_result_bytes,
                  what="NADS_SANDBOX_MEMORY_BYTES, NADS_TASK_SOFT_TIME_LIMIT_S",
                  wall_what="" if budget is None else f"the shard's time budget: {budget.basis}")


def sandbox_request(settings: Settings, module: str | None = None, **fields: object) -> dict:
    """A sandbox request; `module`: the job kind's module that runs it in the child
    (`nadcore.<kind>.sandboxed`, nadcore.uploaded.isolated)."""
    module_field = {} if module is None else {"module": module}
    return {"archive_checks": not settings.unsafe_skip_archive_checks, **module_field,
            **fields}


def run_kind(task: str, module: str, settings: Settings, spec: BaseModel, archive: Path,
             threads: int, limit: int, progress: Progress, should_stop: ShouldStop,
             budget: Budget | None, arrays: dict[str, np.ndarray] | None = None,
             **fields: object) -> Outcome:
    """`task` of a job kind's side of the sandbox child (`module`: `nadcore.<kind>.sandboxed`)
    on the spec's uploaded architecture (its `archive`, loaded by worker.tasks), its result
    bounded by `limit` bytes; the kind checks what comes back (worker/kinds/<kind>.py)."""
    request = sandbox_request(settings, module, spec=spec.model_dump(mode="json"), **fields)
    return run_sandboxed(task, request, archive, job_limits(settings, threads, limit, budget),
                         arrays=arrays, progress=progress, should_stop=should_stop)


# -- what may come back ---------------------------------------------------------------------
def clean_info(value: object, depth: int = 0) -> object:
    """JSON from the sandbox reduced to numbers, booleans and short escaped strings."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):  # JSON's integers have no bound: 10**400 is no float
        return value if abs(value) < 1 << 63 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return excerpt(value, 120)
    if depth >= 3:
        return None
    if isinstance(value, dict):
        return {excerpt(str(k), 60): clean_info(v, depth + 1) for k, v in list(value.items())[:64]}
    if isinstance(value, list):
        return [clean_info(v, depth + 1) for v in value[:64]]
    return None


def check_finite(what: str, **arrays: np.ndarray | None) -> None:
    """`require_finite` on what the sandbox returned, which may not even be numeric."""
    for name, array in arrays.items():
        if array is not None and not np.issubdtype(array.dtype, np.number):
            raise SandboxError(f"{what}: {name} is not numeric")
    try:
        require_finite(**arrays)
    except NonFiniteResult as exc:
        raise SandboxError(f"{what}: {exc}") from None


def check_shape(what: str, name: str, array: np.ndarray, expected: tuple[int, ...]) -> None:
    if tuple(array.shape) != expected:
        raise SandboxError(f"{what}: {name} has shape {tuple(array.shape)}, expected {expected}")


class _ReadOnlyView(io.RawIOBase):
    """A seekable read-only file over bytes-like data, without a copy: io.BytesIO copies
    anything but `bytes`, and a large result comes off the sandbox's pipe as the mapping it
    was read into (`nadcore.uploaded.isolated.FrameReader`), which would be held twice."""

    def __init__(self, data: bytes | mmap.mmap) -> None:
        self.view, self.position = memoryview(data), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        n = max(0, min(len(target), len(self.view) - self.position))
        target[:n] = self.view[self.position:self.position + n]
        self.position += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: len(self.view)}[whence]
        if base + offset < 0:
            raise OSError("negative seek position")
        self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position


def _result(outcome_bytes: bytes | mmap.mmap | None, what: str) -> BinaryIO:
    if outcome_bytes is None:
        raise SandboxError(f"{what}: the sandbox returned no result")
    return io.BufferedReader(_ReadOnlyView(outcome_bytes))


def load_result(loader: Callable[[BinaryIO], object], data: bytes | mmap.mmap | None,
                what: str, limit: int) -> object:
    """`loader` on the result's bytes once their declared sizes are within `limit`: a result
    that would inflate past it is refused before anything is decompressed."""
    buf = _result(data, what)
    try:
        read_npz(buf, limit, setting="what the job's spec asks for")
    except ArchiveError as exc:
        raise SandboxError(f"{what}: the sandbox returned a refused result: {exc}") from None
    buf.seek(0)
    try:
        return loader(buf)
    except SandboxError:
        raise
    except Exception:  # noqa: BLE001 (malformed bytes from the sandbox)
        raise SandboxError(f"{what}: the sandbox returned a malformed result") from None


# -- the training kinds' shards (probe, poison) --------------------------------------------
def check_training(what: str, start: int, stop: int, part: object,
                   curves: dict[str, tuple[int, ...]]) -> None:
    """A training kind's partial (probe, poison) from the sandbox: the shard asked for, each
    array of `curves` of its shape and finite, its `info` cleaned."""
    if (part.start, part.stop) != (start, stop):  # type: ignore[attr-defined]
        raise SandboxError(f"{what}: the sandbox returned another shard")
    for name, shape in curves.items():
        array = getattr(part, name)
        check_shape(what, name, array, shape)
        check_finite(what, **{name: array})
    part.info = clean_info(part.info)  # type: ignore[attr-defined]


# -- validation -----------------------------------------------------------------------------
_INFO_TYPES = {"num_outputs": int, "num_params": int, "state_entries": int}


def validate(settings: Settings, archive: Path, input_shape: list[int], init: str,
             output: str | None = None) -> tuple[dict | None, str | None]:
    """(info, None) for a usable archive, (None, reason) otherwise; the reason is the
    service's own words."""
    limits = Limits(wall_s=settings.architecture_validation_timeout_s,
                    memory_bytes=settings.architecture_validation_memory_bytes,
                    scratch_bytes=settings.sandbox_scratch_bytes,
                    what="NADS_ARCHITECTURE_VALIDATION_TIMEOUT_S, "
                         "NADS_ARCHITECTURE_VALIDATION_MEMORY_BYTES")
    try:
        outcome = run_sandboxed("validate", sandbox_request(settings, input_shape=list(input_shape),
                                                     init=init, output=output),
                                archive, limits)
    except SandboxError as exc:
        return None, str(exc)
    info = clean_info(outcome.info)
    if not isinstance(info, dict) or any(not isinstance(info.get(k), t) or info[k] < 0
                                         for k, t in _INFO_TYPES.items()) \
            or info["num_outputs"] < 1 or info.get("format") not in ("torchscript", "export"):
        return None, "validation returned an incomplete report"
    flops = info.get("flops")
    if flops is not None and not (isinstance(flops, (int, float)) and flops >= 0):
        info["flops"] = None
    info["validation_seconds"] = round(outcome.seconds, 3)
    info["seconds_per_pass"] = seconds_per_pass(info, outcome.seconds)
    return info, None


def seconds_per_pass(info: dict, wall_s: float) -> float | None:
    """Seconds per input at the batch sizes jobs run in bulk (a training batch and larger: the
    finite-difference block), from validation's timings (`batch_seconds`): the slowest. The
    timings are the sandboxed child's word, so their total is capped at the wall time the
    worker saw; a model that claims less only shortens its own jobs' budgets."""
    timed = info.get("batch_seconds")
    if not isinstance(timed, dict):
        return None
    pairs = [(int(b), float(s)) for b, s in timed.items()
             if str(b).isdigit() and int(b) >= TRAINING_BATCH and isinstance(s, (int, float))
             and not isinstance(s, bool) and s >= 0]
    if not pairs:
        return None
    total = sum(s for _, s in pairs)
    scale = min(1.0, wall_s / total) if total > 0 else 1.0
    return max(s * scale / b for b, s in pairs)
