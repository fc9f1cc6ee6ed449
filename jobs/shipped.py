"""Catalog entries shipped with the repository (`catalog_data/<arch>/`), served from the first
start without computing anything.

The format of one entry (written by `nads catalog export`, nads/catalog_export.py):

    nads.npy             (k, D) float32, orthonormal rows, descending eigenvalue order
    eigenvalues.npy      (k,) float32
    eval_point.npy       (C, H, W) float32
    check_gradients.npy  (m, D) float32: the finite-difference gradients of networks 0..m-1
                         as the run computed them (`nads catalog verify` recomputes them)
    preview.png, spectrum.png
    provenance.json      spec, precision, device, torch version, wall time, networks, split-half
                         stability, and the sha256 and size of every file above

Installing (`install_shipped`, called by `nads serve` and `nads catalog install`) checks every
file against its sha256, copies it into the blob store and records a ready catalog row with
`origin = "shipped"`. A row that was built by this service (`origin = "built"`) is never
overwritten; a shipped row is updated when the shipped files change. Nothing here imports torch.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jobs import state
from nadcore.specs.architecture import BUILTIN_ARCHITECTURES
from store.blobs import Blobs, open_blob_store, record_blob
from store.blobs import file_sha256 as sha256_file
from store.models import CATALOG_READY, ORIGIN_SHIPPED, CatalogEntry, utcnow
from store.settings import Settings

log = logging.getLogger(__name__)

FORMAT = 1
PROVENANCE = "provenance.json"
# name -> media type; every file is listed with its sha256 in provenance.json
FILES = {"nads.npy": "application/octet-stream", "eigenvalues.npy": "application/octet-stream",
         "eval_point.npy": "application/octet-stream",
         "check_gradients.npy": "application/octet-stream", "preview.png": "image/png",
         "spectrum.png": "image/png"}
# Per-network relative L2 error ||g_cpu - g_shipped|| / ||g_shipped|| allowed by `verify`, by
# the precision the shipped gradients were computed at. A different network, seed or evaluation
# point gives about sqrt(2) (uncorrelated gradients of equal norm), so each bound still catches
# a wrong entry. fp32: other CPUs' kernels round differently (measured here: 0, bitwise equal);
# tf32 (10-bit mantissa): ResNet-18 on an H100 measured 7.6e-4 against the CPU; bf16 (7-bit
# mantissa): LeNet on this CPU measured at most 0.022 per network (BENCHMARKS.md).
VERIFY_TOLERANCE = {"fp32": 1e-4, "tf32": 1e-2, "bf16": 0.1}


# A background CPU build's finished shards (nads/catalog_background.py) wait in
# catalog_data/<arch>/partials/<start>-<stop>.npz until the entry is finalized.
PARTIALS = "partials"
PARTIAL_NAME = re.compile(r"^(\d{5,})-(\d{5,})\.npz$")


def partial_files(folder: Path) -> list[tuple[Path, int, int]]:
    """(path, start, stop) of the finished partials in `folder`, by start (names only)."""
    found = []
    for path in folder.glob("*.npz") if folder.is_dir() else []:
        match = PARTIAL_NAME.match(path.name)
        if match:
            found.append((path, int(match[1]), int(match[2])))
    return sorted(found, key=lambda f: f[1])


def background_networks(directory: Path | None, name: str) -> int:
    """Networks that a background build of `name` has in its partials under `directory`."""
    if directory is None:
        return 0
    return sum(stop - start for _, start, stop in partial_files(directory / name / PARTIALS))


class ShippedError(ValueError):
    """A shipped entry is missing a file, or a file does not match its recorded sha256."""


@dataclass(frozen=True)
class ShippedEntry:
    name: str
    folder: Path
    provenance: dict[str, Any]

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return self.provenance["files"]

    def check(self) -> None:
        """Every file present and equal to its recorded sha256 (ShippedError otherwise)."""
        for name in FILES:
            path = self.folder / name
            record = self.files.get(name)
            if record is None or not path.is_file():
                raise ShippedError(f"{self.name}: {name} is missing from "
                                   f"{'provenance.json' if record is None else self.folder}")
            actual = sha256_file(path)
            if actual != record["sha256"]:
                raise ShippedError(f"{self.name}: {name} has sha256 {actual}, provenance.json "
                                   f"records {record['sha256']}")


def read_entry(folder: Path) -> ShippedEntry:
    """The entry in `folder` (its provenance parsed; files not hashed yet: see `check`)."""
    if folder.name not in BUILTIN_ARCHITECTURES:
        raise ShippedError(f"{folder.name}: not one of the catalog's architectures "
                           f"({', '.join(BUILTIN_ARCHITECTURES)})")
    path = folder / PROVENANCE
    try:
        provenance = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ShippedError(f"{folder.name}: cannot read {path}: {exc}") from exc
    if provenance.get("format") != FORMAT:
        raise ShippedError(f"{folder.name}: provenance.json format {provenance.get('format')!r}"
                           f", this service reads format {FORMAT}")
    if provenance.get("architecture") != folder.name:
        raise ShippedError(f"{folder.name}: provenance.json is for "
                           f"{provenance.get('architecture')!r}")
    return ShippedEntry(folder.name, folder, provenance)


def shipped_entries(directory: Path | None) -> list[ShippedEntry]:
    """Every entry under `directory` (a folder per architecture with a provenance.json)."""
    if directory is None or not directory.is_dir():
        return []
    folders = [p for p in directory.iterdir() if p.is_dir() and (p / PROVENANCE).is_file()]
    order = {name: i for i, name in enumerate(BUILTIN_ARCHITECTURES)}  # the paper's order
    return [read_entry(p) for p in sorted(folders, key=lambda p: (order.get(p.name, 99),
                                                                  p.name))]


def _built_at(provenance: dict[str, Any]) -> datetime:
    try:
        return datetime.fromisoformat(provenance["created_at"].removesuffix("Z"))
    except (KeyError, ValueError):
        return utcnow()


def _store_files(blobs: Blobs, session: Session, entry: ShippedEntry) -> dict[str, str]:
    stored = {}
    for name in FILES:
        sha = entry.files[name]["sha256"]
        record_blob(session, sha, entry.files[name]["size"])  # before the file: store/blobgc.py
        if not blobs.exists(sha):
            sha_put, _ = blobs.put_file(entry.folder / name)
            if sha_put != sha:  # changed between check() and the copy
                raise ShippedError(f"{entry.name}: {name} changed while it was installed")
        stored[name] = sha
    return stored


def install_entry(session: Session, blobs: Blobs, settings: Settings,
                  entry: ShippedEntry) -> str:
    """Records one shipped entry as ready (files checked and copied into the blob store).
    Returns what it did: "installed", "updated", "unchanged" or "kept built"."""
    row = session.scalar(select(CatalogEntry).where(CatalogEntry.name == entry.name))
    if row is not None and row.origin != ORIGIN_SHIPPED:
        return "kept built"  # built here (or being rebuilt with --replace): never overwritten
    if row is not None and row.provenance == entry.provenance:
        return "unchanged"
    entry.check()
    files = _store_files(blobs, session, entry)
    prov = entry.provenance
    values = dict(
        status=CATALOG_READY, origin=ORIGIN_SHIPPED, spec=prov["spec"],
        target_stability=settings.catalog_target_stability,
        stability_k=int(prov["stability_k"]), round_networks=settings.catalog_round_networks,
        shard_networks=settings.catalog_shard_networks, job_pk=None, rounds=0,
        networks=int(prov["networks"]),
        stability=(prov.get("stability") or {}).get(str(prov["stability_k"])),
        stopped_early=int(prov["networks"]) < int(prov["spec"]["num_networks"]),
        sha256=files["nads.npy"], error=None, built_at=_built_at(prov), files=files,
        provenance=prov, updated_at=utcnow(),
    )
    if row is not None:  # a `--replace` rebuild may have taken it since it was read
        return "updated" if state.update_shipped_entry(session, row.id, values) else "kept built"
    session.add(CatalogEntry(name=entry.name, **values))
    try:
        session.commit()
    except IntegrityError:  # another process installed it at the same moment
        session.rollback()
        return "unchanged"
    return "installed"


def install_shipped(session: Session, settings: Settings) -> dict[str, str]:
    """Installs every entry under `settings.catalog_shipped_dir`; name -> what was done (or
    the error: a bad entry is reported and skipped, the others are installed)."""
    blobs = open_blob_store(settings)
    done = {}
    try:
        entries = shipped_entries(settings.catalog_shipped_dir)
    except ShippedError as exc:
        log.error("shipped catalog: %s", exc)
        return {"catalog_data": f"error: {exc}"}
    for entry in entries:
        try:
            done[entry.name] = install_entry(session, blobs, settings, entry)
        except (ShippedError, KeyError, OSError) as exc:
            session.rollback()
            log.error("shipped catalog entry %s not installed: %s", entry.name, exc)
            done[entry.name] = f"error: {exc}"
    return done
