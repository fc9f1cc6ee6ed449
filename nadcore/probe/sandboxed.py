"""Probe jobs in the worker's sandbox child (`nadcore.uploaded.isolated`, on an uploaded
model): `shard` (spec, start, stop; directions.npy -> the shard's `ProbePartial`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from nadcore.control import Progress
from nadcore.probe.spec import ProbeSpec
from nadcore.training.shards import run_probe_shard
from nadcore.uploaded.isolated import Info, never


def run(task: str, request: dict, folder: Path, progress: Progress, info: Info) -> bytes:
    if task != "shard":
        raise ValueError(f"task: unknown task {task[:40]!r}")
    directions = np.load(folder / "directions.npy", allow_pickle=False)
    buf = io.BytesIO()
    run_probe_shard(ProbeSpec.model_validate(request["spec"]), directions, request["start"],
                    request["stop"], progress=progress, should_stop=never).save(buf)
    return buf.getvalue()
