"""NAD jobs in the worker's sandbox child (`nadcore.uploaded.isolated`, on an uploaded model):
`shard` (spec, start, stop -> the shard's `PartialNADs`) and `whole` (spec -> nads,
eigenvalues, eval_point as .npz, the rest of the result as `info`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from nadcore.control import Progress
from nadcore.nads.engine import compute_shard, run_spec
from nadcore.nads.spec import NADSpec
from nadcore.uploaded.isolated import Info, never


def run(task: str, request: dict, folder: Path, progress: Progress, info: Info) -> bytes:
    spec = NADSpec.model_validate(request["spec"])
    buf = io.BytesIO()
    if task == "shard":
        compute_shard(spec, request["start"], request["stop"], progress=progress,
                      should_stop=never).save(buf)
    elif task == "whole":
        result = run_spec(spec, progress=progress, should_stop=never)
        info({"stability": {str(k): v for k, v in result.stability.items()},
              "num_networks": result.num_networks, "decomposition": result.decomposition,
              "info": result.info})
        np.savez(buf, **result.arrays())
    else:
        raise ValueError(f"task: unknown task {task[:40]!r}")
    return buf.getvalue()
