"""NAD jobs in the worker: a shard is the partial sums (or gradient block) of a range of network
indices; the merge decomposes the merged partials and writes the arrays and figures. A
sequential job (early stopping) runs whole in one task (`run_whole`)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np

from jobs.budget import Budget
from nadcore import NADResult, PartialNADs, compute_shard, finalize, merge_partials, run_spec
from nadcore.nads.decompose import subspace_overlap
from nadcore.nads.engine import merge_key
from nadcore.nads.figures import render_nad_figures
from nadcore.nads.identifiability import chance, noise_upper
from nadcore.nads.spec import STABILITY_KS, NADSpec
from store.settings import Settings, get_settings
from worker import uploaded
from worker.kinds.base import (
    NPY,
    PNG,
    Claimed,
    Files,
    Inputs,
    Needs,
    Progress,
    Reference,
    ShouldStop,
    require_finite,
    torch_threads,
)
from worker.sandbox import SandboxError


def catalog_comparison(summary: dict[str, Any], nads: np.ndarray,
                       reference: Reference | None) -> dict[str, Any] | None:
    """The overlap ||U_k^T V_k||_F^2 / k of these NADs with those of `reference`, the ready
    catalog entry of the same architecture, when it has the same input shape, method and
    scale, at the k of STABILITY_KS both hold, beside chance k/D and the top of its noise band
    (`nadcore.nads.identifiability`: two independent estimates of an isotropic covariance
    overlap like random subspaces); None when there is no such entry. With the catalog's seed
    the first networks are the same ones, and the overlap is then not an independent check:
    `shared_networks` says how many."""
    if reference is None or not isinstance(summary.get("architecture"), str):
        return None
    spec = reference.spec
    if (list(spec["input_shape"]) != list(summary["input_shape"])
            or spec["method"] != summary["method"]
            or (summary["method"] == "finite_difference" and spec["scale"] != summary["scale"])):
        return None
    dim = nads.shape[1]
    ks = [k for k in STABILITY_KS if k <= min(nads.shape[0], reference.nads.shape[0], dim)]
    networks = reference.summary.get("num_networks")
    shared = (min(summary["num_networks"], networks)
              if networks is not None and spec.get("seed") == summary.get("seed")
              and spec.get("eval_point") is None and summary.get("eval_point") != "given"
              else 0)
    return {"entry": reference.entry, "networks": networks, "shared_networks": shared,
            "ks": [{"k": k, "overlap": round(subspace_overlap(nads, reference.nads, k), 6),
                    "chance": round(chance(k, dim), 6),
                    "noise_upper": round(noise_upper(k, dim), 6)} for k in ks]}


def result_files(result: NADResult, inputs: Inputs, folder: Path
                 ) -> tuple[Files, dict[str, Any]]:
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
    summary["catalog"] = catalog_comparison(summary, result.nads, inputs.reference)
    if isinstance(summary.get("architecture"), dict):  # an uploaded one: titled by its name
        summary["architecture_name"] = inputs.given_name
    figures = render_nad_figures(result.nads, result.eigenvalues, summary, folder)
    return files + [(path, PNG) for path in figures], summary


def shard_result_limit(spec: NADSpec, start: int, stop: int) -> int:
    """The most bytes the sandbox may send for networks start..stop-1: the representation the
    engine uses for this spec (`NADSpec.representation`), never both. The gradients' bound is
    (stop - start) x D; the moments' 2 x D x D is far larger (for D = 3 x 512 x 512, some
    10 TB, past what a frame can say) and would let a hostile model make the worker hold a
    4 GiB frame (three copies of it on the way) for a result of a few MB."""
    d = spec.input_dim
    if spec.representation == "gradients":
        return uploaded.result_bytes((stop - start) * d, d)  # gradients, eval_point
    return uploaded.result_bytes(2, 2 * d, 2 * d * d, d)  # count, sums, outer, eval_point


def sandboxed_shard(settings: Settings, spec: NADSpec, archive: Path, start: int, stop: int,
                    threads: int, progress: Progress, should_stop: ShouldStop,
                    budget: Budget | None = None) -> PartialNADs:
    """Networks start..stop-1 of a NAD job on an uploaded architecture, in the sandbox
    (nadcore.nads.sandboxed), the partial checked before it is kept."""
    what = f"networks {start}..{stop - 1}"
    d, representation = spec.input_dim, spec.representation
    limit = shard_result_limit(spec, start, stop)
    outcome = uploaded.run_kind("shard", "nadcore.nads.sandboxed", settings, spec, archive,
                                threads, limit, progress, should_stop, budget, start=start,
                                stop=stop)
    part = uploaded.load_result(PartialNADs.load, outcome.result, what, limit)
    assert isinstance(part, PartialNADs)
    if part.key != merge_key(spec) or (part.start, part.stop) != (start, stop):
        raise SandboxError(f"{what}: the sandbox returned another shard")
    if part.representation != representation:
        raise SandboxError(f"{what}: the sandbox returned {part.representation}, not the "
                           f"{representation} this spec's shards hold")
    uploaded.check_shape(what, "eval_point", part.eval_point, tuple(spec.input_shape))
    if part.gradients is not None:
        uploaded.check_shape(what, "gradients", part.gradients, (stop - start, d))
    else:
        for name, shape in (("count", (2,)), ("sums", (2, d)), ("outer", (2, d, d))):
            if getattr(part, name) is None:
                raise SandboxError(f"{what}: the sandbox returned no {name}")
            uploaded.check_shape(what, name, getattr(part, name), shape)
    uploaded.check_finite(what, eval_point=part.eval_point, gradients=part.gradients,
                          sums=part.sums, outer=part.outer)
    part.meta = uploaded.clean_info(part.meta)  # type: ignore[assignment]
    return part


def sandboxed_whole(settings: Settings, spec: NADSpec, archive: Path, threads: int,
                    progress: Progress, should_stop: ShouldStop, budget: Budget | None = None
                    ) -> NADResult:
    """A whole NAD job (early stopping) on an uploaded architecture, in the sandbox, its
    result checked before it is kept."""
    what = "the job"
    limit = uploaded.result_bytes(spec.num_nads * spec.input_dim, spec.num_nads, spec.input_dim)
    outcome = uploaded.run_kind("whole", "nadcore.nads.sandboxed", settings, spec, archive,
                                threads, limit, progress, should_stop, budget)

    def load(buf: io.BytesIO) -> dict[str, np.ndarray]:
        with np.load(buf, allow_pickle=False) as z:
            return {n: z[n] for n in ("nads", "eigenvalues", "eval_point")}

    arrays = uploaded.load_result(load, outcome.result, what, limit)
    assert isinstance(arrays, dict)
    info = uploaded.clean_info(outcome.info)  # the model's word: nothing read raw
    assert isinstance(info, dict)
    n = info.get("num_networks")
    if not isinstance(n, int) or not 2 <= n <= spec.num_networks:
        raise SandboxError(f"{what}: the sandbox returned no valid network count")
    k = min(spec.num_nads, n - 1, spec.input_dim)
    uploaded.check_shape(what, "nads", arrays["nads"], (k, spec.input_dim))
    uploaded.check_shape(what, "eigenvalues", arrays["eigenvalues"], (k,))
    uploaded.check_shape(what, "eval_point", arrays["eval_point"], tuple(spec.input_shape))
    uploaded.check_finite(what, **arrays)
    decomposition = info.get("decomposition")
    if decomposition not in ("covariance", "lowrank"):
        raise SandboxError(f"{what}: the sandbox returned no valid decomposition")
    reported = info.get("stability")
    stability = {int(key): float(v) for key, v in
                 (reported.items() if isinstance(reported, dict) else ())
                 if re.fullmatch(r"[0-9]{1,9}", key) and isinstance(v, (int, float))
                 and not isinstance(v, bool)}
    extra = info.get("info")
    return NADResult(nads=arrays["nads"], eigenvalues=arrays["eigenvalues"],
                     eval_point=arrays["eval_point"], stability=stability, spec=spec,
                     num_networks=n, decomposition=decomposition,
                     info=extra if isinstance(extra, dict) else {})


class NADRunner:
    def needs(self, spec: dict) -> Needs:
        """A result is compared with the catalog's entry of its (built-in) architecture."""
        arch = spec.get("architecture")
        return Needs(catalog_of=arch if isinstance(arch, str) else None)

    def run_shard(self, claimed: Claimed, inputs: Inputs, progress: Progress,
                  should_stop: ShouldStop) -> PartialNADs:
        spec = NADSpec.model_validate(claimed.spec)
        start, stop = spec.shard_ranges()[claimed.index]
        if inputs.archive is not None:
            return sandboxed_shard(get_settings(), spec, inputs.archive, start, stop,
                                   torch_threads(), progress, should_stop, claimed.budget)
        return compute_shard(spec, start, stop, progress=progress, should_stop=should_stop)

    def merge(self, spec: dict, inputs: Inputs, folder: Path) -> tuple[Files, dict[str, Any]]:
        nad_spec = NADSpec.model_validate(spec)
        partials = [PartialNADs.load(path) for path in inputs.partials]
        return result_files(finalize(nad_spec, merge_partials(partials)), inputs, folder)

    def run_whole(self, claimed: Claimed, inputs: Inputs, progress: Progress,
                  should_stop: ShouldStop) -> NADResult:
        """The whole job in one task: required when early stopping (target_stability) is on."""
        spec = NADSpec.model_validate(claimed.spec)
        if inputs.archive is not None:
            return sandboxed_whole(get_settings(), spec, inputs.archive, torch_threads(),
                                   progress, should_stop, claimed.budget)
        return run_spec(spec, progress=progress, should_stop=should_stop)

    def result_files(self, result: NADResult, inputs: Inputs, folder: Path
                     ) -> tuple[Files, dict[str, Any]]:
        return result_files(result, inputs, folder)


RUNNER = NADRunner()
