"""Writing and checking the catalog entries shipped with the repository (`catalog_data/<arch>/`;
the format is described in jobs/shipped.py).

- `export_direct`: runs the engine in this process with the catalog's spec (finite
  differences, scale 100, 1x32x32, seed 0, 10,000 networks) and writes the entry;
  `export_partial` does the same from a saved partial of networks [0, N) (`PartialNADs.save`).
- `export_from_service`: writes the entry from a ready catalog entry of a running service (its
  final round job's artifacts, and the first shard's partial for the check gradients).
- `verify`: recomputes the shipped check gradients (the first networks) on this machine in
  fp32 and compares them with the shipped ones within `VERIFY_TOLERANCE[precision]`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jobs.shipped import (
    FILES,
    FORMAT,
    PARTIALS,
    PROVENANCE,
    VERIFY_TOLERANCE,
    read_entry,
    sha256_file,
)
from nadcore.nads.engine import NADResult, ShardRunner, device_name, eval_point_for, finalize
from nadcore.nads.partial import PartialNADs
from nadcore.nads.spec import NADSpec

CATALOG_INPUT_SHAPE = (1, 32, 32)
STABILITY_K = 64  # the catalog's stopping rule is checked at k = 64
CHECK_NETWORKS = 4  # networks whose gradients ship for `verify`
# fewer for the large architectures: `verify` recomputes them on a CPU (one network is enough
# to catch a wrong entry: another network's gradient is off by about sqrt(2))
CHECK_NETWORKS_BY_ARCH = {"logreg": 4, "lenet": 4, "vgg11": 2, "resnet18": 2, "densenet121": 1}


def catalog_spec(arch: str, networks: int = 10_000, precision: str = "auto") -> NADSpec:
    """The catalog's spec (jobs/catalog.py: target_spec) at `networks`."""
    return NADSpec(architecture=arch, input_shape=CATALOG_INPUT_SHAPE, num_networks=networks,
                   method="finite_difference", scale=100.0, seed=0, precision=precision)


def _save(folder: Path, name: str, array: np.ndarray, dtype: type) -> None:
    np.save(folder / name, np.ascontiguousarray(array, dtype=dtype))


def write_entry(out: Path, arch: str, spec: NADSpec, *, nads: np.ndarray,
                eigenvalues: np.ndarray, eval_point: np.ndarray, check_gradients: np.ndarray,
                figures: dict[str, Path], info: dict[str, Any]) -> Path:
    """Writes `out/<arch>/` (arrays as float32, figures, provenance.json with every sha256)
    through a temporary folder renamed into place; returns the folder."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{arch}-"))
    try:
        _save(tmp, "nads.npy", nads, np.float32)
        _save(tmp, "eigenvalues.npy", eigenvalues, np.float32)
        _save(tmp, "eval_point.npy", eval_point, np.float32)
        _save(tmp, "check_gradients.npy", check_gradients, np.float32)
        for name in ("preview.png", "spectrum.png"):
            shutil.copyfile(figures[name], tmp / name)
        files = {}
        for name in FILES:
            path = tmp / name
            record: dict[str, Any] = {"sha256": sha256_file(path), "size": path.stat().st_size}
            if name.endswith(".npy"):
                array = np.load(path, mmap_mode="r")
                record |= {"shape": list(array.shape), "dtype": str(array.dtype)}
            files[name] = record
        precision = info["precision"]
        provenance = {
            "format": FORMAT, "architecture": arch, "spec": spec.model_dump(mode="json"),
            "precision": precision, "precision_requested": spec.precision,
            "device": info["device"], "device_name": info["device_name"],
            "torch": info["torch"], "wall_seconds": round(float(info["wall_seconds"]), 1),
            "networks": int(info["networks"]), "num_nads": int(nads.shape[0]),
            "stability": {str(k): float(v) for k, v in info["stability"].items()},
            "stability_k": STABILITY_K, "decomposition": info["decomposition"],
            "source": info["source"], **({"build": info["build"]} if info.get("build") else {}),
            "check_networks": int(check_gradients.shape[0]),
            "verify_tolerance": VERIFY_TOLERANCE[precision.split("+")[-1]],
            "created_at": datetime.now(UTC).replace(microsecond=0, tzinfo=None).isoformat()
            + "Z",
            "files": files,
        }
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
        final = out / arch
        if (final / PARTIALS).is_dir():  # a background build's shards stay (catalog_background)
            (final / PARTIALS).rename(tmp / PARTIALS)
        if final.exists():
            shutil.rmtree(final)
        tmp.chmod(0o755)  # mkdtemp's 0700 would keep the shipped files from other users
        tmp.rename(final)
        return final
    except BaseException:
        if (tmp / PARTIALS).is_dir():  # never lost with the temporary folder
            (out / arch).mkdir(exist_ok=True)
            (tmp / PARTIALS).rename(out / arch / PARTIALS)
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _result_info(result: NADResult, wall_seconds: float, source: str,
                 build: dict[str, Any] | None = None) -> dict[str, Any]:
    info = result.info
    return {"build": build, "precision": info.get("precision", "fp32"),
            "device": info.get("plan", {}).get("device", "cpu"),
            "device_name": info.get("device_name") or device_name(torch.device("cpu")),
            "torch": info.get("torch", torch.__version__), "wall_seconds": wall_seconds,
            "networks": result.num_networks, "stability": result.stability,
            "decomposition": result.decomposition, "source": source}


def _write_result(out: Path, arch: str, spec: NADSpec, result: NADResult,
                  check_gradients: np.ndarray, wall_seconds: float, source: str,
                  build: dict[str, Any] | None = None) -> Path:
    from nadcore.nads.figures import render_nad_figures

    with tempfile.TemporaryDirectory() as tmp:
        preview, spectrum = render_nad_figures(result.nads, result.eigenvalues,
                                               result.summary(), Path(tmp))
        return write_entry(out, arch, spec, nads=result.nads, eigenvalues=result.eigenvalues,
                           eval_point=result.eval_point, check_gradients=check_gradients,
                           figures={"preview.png": preview, "spectrum.png": spectrum},
                           info=_result_info(result, wall_seconds, source, build))


def rerender_figures(folder: Path) -> list[str]:
    """Renders preview.png and spectrum.png of the shipped entry in `folder` again from its
    arrays and provenance (after nadcore/nads/figures.py changed) and records their new sha256
    and size in provenance.json; the arrays are untouched. Returns the files rewritten."""
    from nadcore.nads.figures import render_nad_figures

    prov = json.loads((folder / PROVENANCE).read_text())
    spec = prov["spec"]
    summary = {"architecture": prov["architecture"], "input_shape": spec["input_shape"],
               "method": spec["method"], "scale": spec.get("scale"),
               "num_networks": prov["networks"], "stability": prov["stability"]}
    nads = np.load(folder / "nads.npy")
    eigenvalues = np.load(folder / "eigenvalues.npy")
    with tempfile.TemporaryDirectory() as tmp:
        for path in render_nad_figures(nads, eigenvalues, summary, Path(tmp)):
            shutil.copyfile(path, folder / path.name)
            prov["files"][path.name] = {"sha256": sha256_file(folder / path.name),
                                        "size": (folder / path.name).stat().st_size}
    (folder / PROVENANCE).write_text(json.dumps(prov, indent=2) + "\n")
    return ["preview.png", "spectrum.png", PROVENANCE]


def export_partial(out: Path, arch: str, spec: NADSpec, part: PartialNADs,
                   check_networks: int = CHECK_NETWORKS, wall_seconds: float | None = None,
                   source: str = "direct engine run (nads catalog export --direct)",
                   build: dict[str, Any] | None = None) -> Path:
    """The entry of a partial covering networks [0, N) of `spec` (gradients kept); `build`
    (how the partials were computed) is recorded in the provenance when given."""
    if part.gradients is None:
        raise ValueError("partial: holds moments, not gradients; the check gradients of the "
                         "first networks cannot be taken from it")
    t0 = time.perf_counter()
    result = finalize(spec, part)
    seconds = (wall_seconds if wall_seconds is not None
               else float(part.meta.get("seconds", 0.0))) + time.perf_counter() - t0
    return _write_result(out, arch, spec, result, part.gradients[:check_networks], seconds,
                         source, build)


def export_direct(out: Path, arch: str, networks: int = 10_000, precision: str = "auto",
                  device: str | None = None, check_networks: int = CHECK_NETWORKS,
                  progress: Any = None) -> Path:
    """Runs the engine on the catalog's spec in this process and writes the entry."""
    spec = catalog_spec(arch, networks, precision)
    t0 = time.perf_counter()
    part = ShardRunner(spec, device).partial(0, networks, progress=progress)
    return export_partial(out, arch, spec, part, check_networks, time.perf_counter() - t0)


def export_from_service(out: Path, arch: str, settings: Any,
                        check_networks: int = CHECK_NETWORKS) -> Path:
    """Writes the entry of a ready, built catalog entry of the service at `settings`."""
    from sqlalchemy import select

    from store.blobs import open_blob_store
    from store.db import session_scope
    from store.models import CATALOG_READY, Artifact, CatalogEntry, Job, Shard

    blobs = open_blob_store(settings)
    with session_scope(settings.resolved_database_url) as session:
        entry = session.scalar(select(CatalogEntry).where(CatalogEntry.name == arch))
        if entry is None or entry.status != CATALOG_READY or entry.job is None:
            state = "missing" if entry is None else (
                entry.status if entry.job is not None else "shipped, not built here")
            raise ValueError(f"arch: the service's {arch} entry is {state}; build it first "
                             "(nads catalog build --arch …) or use --direct")
        job = entry.job
        spec = NADSpec.model_validate(job.spec)
        summary = dict(job.summary or {})
        artifacts = {a.name: a.sha256 for a in session.scalars(
            select(Artifact).where(Artifact.job_pk == job.pk))}
        shard0 = session.scalar(select(Shard).where(Shard.job_pk == job.pk, Shard.index == 0))
        partial_sha = shard0.partial_sha256 if shard0 is not None else None
        # wall time: from this build's first round job (builds wait for one another; each
        # round is one job, so they are the entry's last `rounds` jobs) to the entry's ready
        jobs = [j for j in session.scalars(select(Job).where(Job.user_id == job.user_id)
                                           .order_by(Job.pk.desc()))
                if j.spec.get("architecture") == arch][:max(entry.rounds, 1)]
        first = min(j.created_at for j in jobs)
        wall = (entry.built_at - first).total_seconds() if entry.built_at else 0.0
        rounds, job_id = entry.rounds, job.id
    if partial_sha is None:
        raise ValueError(f"arch: the first shard of {arch}'s job {job_id} has no partial")
    part = PartialNADs.load(blobs.path(partial_sha))
    if part.gradients is None or part.start != 0:
        raise ValueError(f"arch: the first shard of {arch}'s job {job_id} holds no gradients "
                         "of networks 0..")
    arrays = {n: np.load(blobs.path(artifacts[n])) for n in
              ("nads.npy", "eigenvalues.npy", "eval_point.npy")}
    info = {"precision": summary.get("precision", "fp32"),
            "device": summary.get("plan", {}).get("device", "?"),
            "device_name": summary.get("device_name", "?"),
            "torch": summary.get("torch", "?"), "wall_seconds": wall,
            "networks": summary["num_networks"],
            "stability": {int(k): v for k, v in (summary.get("stability") or {}).items()},
            "decomposition": summary.get("decomposition", "covariance"),
            "source": f"catalog entry built by the service: {rounds} rounds of sharded NAD "
                      f"jobs, final job {job_id}"}
    return write_entry(out, arch, spec, nads=arrays["nads.npy"],
                       eigenvalues=arrays["eigenvalues.npy"],
                       eval_point=arrays["eval_point.npy"],
                       check_gradients=part.gradients[:check_networks],
                       figures={n: blobs.path(artifacts[n])
                                for n in ("preview.png", "spectrum.png")},
                       info=info)


def verify(folder: Path, device: str = "cpu", networks: int | None = None) -> dict[str, Any]:
    """Recomputes the shipped check gradients of the entry in `folder` in fp32 on `device` and
    compares them: per-network relative L2 error against the tolerance of the precision the
    entry was computed at. Also checks every sha256 and the evaluation point (bitwise).
    `networks`: only the first that many of the check networks (all by default), for a
    quicker check of a large architecture."""
    if networks is not None and networks < 1:
        raise ValueError(f"networks: at least 1, got {networks}")
    entry = read_entry(folder)
    entry.check()
    prov = entry.provenance
    spec = NADSpec.model_validate(prov["spec"])
    shipped = np.load(folder / "check_gradients.npy")[:networks]
    eval_point = np.load(folder / "eval_point.npy")
    t0 = time.perf_counter()
    runner = ShardRunner(spec.model_copy(update={"precision": "fp32"}), device)
    recomputed = runner.gradients(0, shipped.shape[0]).numpy()
    seconds = time.perf_counter() - t0
    diff = np.linalg.norm(recomputed.astype(np.float64) - shipped, axis=1)
    rel = diff / np.maximum(np.linalg.norm(shipped.astype(np.float64), axis=1), 1e-30)
    precision = prov["precision"].split("+")[-1]
    tolerance = VERIFY_TOLERANCE[precision]
    eval_ok = bool(np.array_equal(eval_point, eval_point_for(spec)))
    return {"architecture": entry.name, "networks": int(shipped.shape[0]),
            "precision": prov["precision"], "tolerance": tolerance,
            "relative_errors": [float(v) for v in rel], "max_relative_error": float(rel.max()),
            "bitwise_equal": bool(np.array_equal(recomputed, shipped)),
            "eval_point_equal": eval_ok, "seconds": round(seconds, 2),
            "ok": bool(rel.max() <= tolerance and eval_ok)}
