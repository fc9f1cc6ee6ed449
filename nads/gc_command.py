"""`nads admin gc`: one pass of the blob collector (store/blobgc.py) now, with the service's
settings (NADS_DATA_DIR, NADS_DATABASE_URL, NADS_BLOB_DIR); the worker's reconciler also runs it
every NADS_BLOB_GC_INTERVAL_S. Safe while the service runs."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def gc_command(
    grace_s: Annotated[float | None, typer.Option(
        "--grace-s", min=0, help="Keep blobs touched this recently (default: "
        "NADS_BLOB_GC_GRACE_S).")] = None,
) -> None:
    from jobs.kinds import pinned_blob_paths
    from store.blobgc import collect
    from store.blobs import open_blob_store
    from store.db import get_sessionmaker
    from store.settings import get_settings

    settings = get_settings()
    grace = settings.blob_gc_grace_s if grace_s is None else grace_s
    report = collect(get_sessionmaker(settings.resolved_database_url),
                     open_blob_store(settings), grace, pinned_blob_paths())
    print(json.dumps({"grace_s": grace, **report.as_dict()}))
