"""NAD jobs in the worker: a shard is the partial sums (or gradient block) of a range of network
indices; the merge decomposes the merged partials and writes the arrays and figures. A
sequential job (early stopping) runs whole in one task (`run_whole`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jobs.sources import SourceError, catalog_nads
from nadcore import NADResult, PartialNADs, compute_shard, finalize, merge_partials, run_spec
from nadcore.nads.decompose import subspace_overlap
from nadcore.nads.figures import render_nad_figures
from nadcore.nads.identifiability import chance, noise_upper
from nadcore.nads.spec import STABILITY_KS, NADSpec
from store.db import session_scope
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
    db_url,
    require_finite,
    torch_threads,
)
from worker.names import given_name


def catalog_comparison(summary: dict[str, Any], nads: np.ndarray) -> dict[str, Any] | None:
    """The overlap ||U_k^T V_k||_F^2 / k of these NADs with those of the ready catalog entry of
    the same architecture, input shape, method and scale, at the k of STABILITY_KS both hold,
    beside chance k/D and the top of its noise band (`nadcore.nads.identifiability`: two
    independent estimates of an isotropic covariance overlap like random subspaces); None when
    no such entry is ready. With the catalog's seed the first networks are the same ones, and
    the overlap is then not an independent check: `shared_networks` says how many."""
    arch = summary.get("architecture")
    if not isinstance(arch, str):
        return None
    with session_scope(db_url()) as session:
        try:
            source = catalog_nads(session, arch, "architecture")
        except SourceError:
            return None
    spec = source.spec
    if (list(spec["input_shape"]) != list(summary["input_shape"])
            or spec["method"] != summary["method"]
            or (summary["method"] == "finite_difference" and spec["scale"] != summary["scale"])):
        return None
    reference = np.load(blob_store().path(source.nads_sha256))
    dim = nads.shape[1]
    ks = [k for k in STABILITY_KS if k <= min(nads.shape[0], reference.shape[0], dim)]
    networks = source.summary.get("num_networks")
    shared = (min(summary["num_networks"], networks)
              if networks is not None and spec.get("seed") == summary.get("seed")
              and spec.get("eval_point") is None and summary.get("eval_point") != "given"
              else 0)
    return {"entry": arch, "networks": networks, "shared_networks": shared,
            "ks": [{"k": k, "overlap": round(subspace_overlap(nads, reference, k), 6),
                    "chance": round(chance(k, dim), 6),
                    "noise_upper": round(noise_upper(k, dim), 6)} for k in ks]}


def result_files(result: NADResult, folder: Path) -> tuple[Files, dict[str, Any]]:
    """A NAD result's arrays as .npy files and its figures (preview.png, spectrum.png), with
    its summary (and its overlap with the catalog's entry, `catalog_comparison`); NaN or inf
    anywhere raises `NonFiniteResult` (the job fails)."""
    require_finite(**result.arrays())
    files: Files = []
    for name, array in result.arrays().items():
        path = folder / f"{name}.npy"
        np.save(path, np.ascontiguousarray(array))
        files.append((path, NPY))
    summary = result.summary()
    summary["catalog"] = catalog_comparison(summary, result.nads)
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

    def result_files(self, result: NADResult, folder: Path) -> tuple[Files, dict[str, Any]]:
        return result_files(result, folder)


RUNNER = NADRunner()
