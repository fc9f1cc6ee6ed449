"""What a runner reads, loaded for `worker.tasks` from the rows and blobs its spec refers to
(the runner's `Needs`): the uploaded architecture's archive, the NAD array (the blob pinned in
the spec at admission; a spec stored before pinning has its source resolved again,
`jobs.sources.resolve_nads`), an uploaded dataset, and for a merge the shards' partials, the
names the figures use and the catalog entry a NAD result is compared with. Runners never open
the database or the blob store themselves (worker/kinds/base.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from jobs.errors import SpecError
from jobs.sources import catalog_nads, own_upload, resolve_nads
from store.blobs import Blobs
from store.models import DATASET_UPLOAD
from worker.kinds.base import Inputs, KindRunner, Needs, Reference
from worker.names import given_name, nad_source
from worker.sandbox import SandboxError


def archive(blobs: Blobs, architecture: Any) -> Path | None:
    """The archive of an uploaded architecture (`{"id", "sha256", ...}`, pinned at admission);
    None for a built-in."""
    if not isinstance(architecture, dict):
        return None
    sha = architecture.get("sha256")
    path = blobs.path(sha or "")
    if sha is None or not path.is_file():
        raise SandboxError(f"architecture {architecture['id']}: its archive is missing from "
                           "the blob store")
    return path


def _nads(session: Session, blobs: Blobs, user_id: int, needs: Needs) -> np.ndarray:
    sha = getattr(needs.nads, "sha256", None)
    if sha is None:  # a job stored before its source was pinned
        sha = resolve_nads(session, user_id, needs.nads, needs.nads_field, "be read").sha256
    try:
        return np.load(blobs.path(sha), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{needs.nads_field}: not a readable .npy file ({exc})") from exc


def _reference(session: Session, blobs: Blobs, arch: str) -> Reference | None:
    try:
        entry = catalog_nads(session, arch, "architecture")
    except SpecError:
        return None
    return Reference(arch, entry.spec or {}, entry.summary,
                     np.load(blobs.path(entry.sha256), allow_pickle=False))


def load_inputs(session: Session, blobs: Blobs, runner: KindRunner, spec: dict,
                user_id: int, partials: list[str] | None = None) -> Inputs:
    """The inputs of a shard of `spec` (of user `user_id`), or of its merge given the shards'
    `partials` (their blobs' sha256, in shard order)."""
    needs = runner.needs(spec)
    merging = partials is not None
    dataset = None
    if needs.dataset_upload is not None:
        row = own_upload(session, user_id, needs.dataset_upload, DATASET_UPLOAD,
                         "dataset.upload")
        dataset = blobs.path(row.sha256)
    return Inputs(
        archive=None if merging else archive(blobs, spec.get("architecture")),
        nads=None if needs.nads is None else _nads(session, blobs, user_id, needs),
        dataset=dataset,
        partials=tuple(blobs.path(sha) for sha in partials or ()),
        given_name=given_name(session, spec.get("architecture")) if merging else None,
        source_name=(nad_source(session, user_id, needs.nads)
                     if merging and needs.nads is not None else None),
        reference=(_reference(session, blobs, needs.catalog_of)
                   if merging and needs.catalog_of else None),
    )
