"""Poison jobs in the worker's sandbox child (`nadcore.uploaded.isolated`, on an uploaded
model): `shard` (spec, start, stop, num_classes, dataset; x_train, y_train, x_test, y_test
and nads .npy -> the shard's `PoisonPartial`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from nadcore.control import Progress
from nadcore.poison.datasets import ImageDataset
from nadcore.poison.spec import PoisonSpec
from nadcore.training.shards import run_poison_shard
from nadcore.uploaded.isolated import Info, never


def run(task: str, request: dict, folder: Path, progress: Progress, info: Info) -> bytes:
    if task != "shard":
        raise ValueError(f"task: unknown task {task[:40]!r}")
    arrays = {n: np.load(folder / f"{n}.npy", allow_pickle=False)
              for n in ("x_train", "y_train", "x_test", "y_test", "nads")}
    data = ImageDataset(*(torch.from_numpy(arrays[n]) for n in
                          ("x_train", "y_train", "x_test", "y_test")),
                        num_classes=int(request["num_classes"]), name=request["dataset"])
    buf = io.BytesIO()
    run_poison_shard(PoisonSpec.model_validate(request["spec"]), data, arrays["nads"],
                     request["start"], request["stop"], progress=progress,
                     should_stop=never).save(buf)
    return buf.getvalue()
