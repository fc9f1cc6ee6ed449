"""NAD jobs in the worker: a shard is the partial sums (or gradient block) of a range of network
indices; the merge decomposes the merged partials and writes the arrays and figures. A
sequential job (early stopping) runs whole in one task (`run_whole`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nadcore import NADResult, PartialNADs, compute_shard, finalize, merge_partials, run_spec
from nadcore.spec import NADSpec
from store.settings import get_settings
from worker import uploaded
from worker.kinds.base import (
    NPY,
    PNG,
    Claimed,
    Files,
    Progress,
    ShouldStop,
    blob_store,
    require_finite,
    torch_threads,
)
from worker.names import given_name
from worker.plots import render_nad_figures


def result_files(result: NADResult, folder: Path) -> tuple[Files, dict[str, Any]]:
    """A NAD result's arrays as .npy files and its figures (preview.png, spectrum.png), with
    its summary; NaN or inf anywhere raises `NonFiniteResult` (the job fails)."""
    require_finite(**result.arrays())
    files: Files = []
    for name, array in result.arrays().items():
        path = folder / f"{name}.npy"
        np.save(path, np.ascontiguousarray(array))
        files.append((path, NPY))
    summary = result.summary()
    if isinstance(summary.get("architecture"), dict):  # an uploaded one: titled by its name
        summary["architecture_name"] = given_name(summary["architecture"])
    figures = render_nad_figures(result.nads, result.eigenvalues, summary, folder)
    return files + [(path, PNG) for path in figures], summary


class NADRunner:
    def run_shard(self, claimed: Claimed, progress: Progress,
                  should_stop: ShouldStop) -> PartialNADs:
        spec = NADSpec.model_validate(claimed.spec)
        start, stop = spec.shard_ranges()[claimed.index]
        if uploaded.uses_upload(spec):
            return uploaded.nad_shard(get_settings(), spec, start, stop, torch_threads(),
                                      progress, should_stop, claimed.budget)
        return compute_shard(spec, start, stop, progress=progress, should_stop=should_stop)

    def merge(self, spec: dict, user_id: int, shas: list[str], folder: Path
              ) -> tuple[Files, dict[str, Any]]:
        nad_spec = NADSpec.model_validate(spec)
        blobs = blob_store()
        partials = [PartialNADs.load(blobs.path(sha)) for sha in shas]
        return result_files(finalize(nad_spec, merge_partials(partials)), folder)

    def run_whole(self, claimed: Claimed, progress: Progress,
                  should_stop: ShouldStop) -> NADResult:
        """The whole job in one task: required when early stopping (target_stability) is on."""
        spec = NADSpec.model_validate(claimed.spec)
        if uploaded.uses_upload(spec):
            return uploaded.nad_whole(get_settings(), spec, torch_threads(), progress,
                                      should_stop, claimed.budget)
        return run_spec(spec, progress=progress, should_stop=should_stop)


RUNNER = NADRunner()
