"""/v1/catalog: the precomputed NADs of the paper's five architectures. Public (no key).

The arrays are the artifacts of the entry's final round job (jobs/catalog.py), or for an
entry shipped with the repository its installed files (jobs/shipped.py), served with
the same ETag / 304 / Range handling as job artifacts. `?k=` serves the first k rows as a valid
.npy, streamed from the blob per request, never written to disk nor held whole in memory (its
ETag is the blob's sha256 and k).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import FileResponse
from sqlalchemy import select

from api.catalog_listing import how_to_build, with_absent
from api.deps import BlobsDep, SessionDep, SettingsDep, released
from api.files import blob_response, etag_matches, stream_response
from api.schemas.catalog import CatalogEntryOut
from jobs.catalog import CATALOG_ARCHITECTURES, describe
from store.blobs import Blobs
from store.models import CATALOG_READY, Artifact, CatalogEntry
from store.settings import Settings

router = APIRouter(prefix="/v1/catalog", tags=["catalog"])


# Files of an entry; the .npy arrays accept ?k=.
FILES = {"nads.npy": "application/octet-stream", "eigenvalues.npy": "application/octet-stream",
         "eval_point.npy": "application/octet-stream", "preview.png": "image/png",
         "spectrum.png": "image/png"}
SLICEABLE = ("nads.npy", "eigenvalues.npy")
CACHE_CONTROL = "public, max-age=3600"

_ORDER = {name: i for i, name in enumerate(CATALOG_ARCHITECTURES)}


def _row(session: SessionDep, arch: str) -> CatalogEntry | None:
    return session.scalar(select(CatalogEntry).where(CatalogEntry.name == arch))


def _unknown(arch: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND,
                         detail=f"arch: {arch[:80]!r} is not an architecture of the catalog; "
                         f"it holds {', '.join(CATALOG_ARCHITECTURES)}")


def _entry(session: SessionDep, settings: Settings, arch: str) -> CatalogEntry:
    """The entry's row; 404 saying how to build it when it has none yet."""
    entry = _row(session, arch)
    if entry is None and arch in CATALOG_ARCHITECTURES:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"arch: {arch!r} is not built on this server: "
                            f"{how_to_build(arch, settings)}")
    if entry is None:
        raise _unknown(arch)
    return entry


@router.get("", response_model=list[CatalogEntryOut])
def list_catalog(session: SessionDep, settings: SettingsDep) -> list[dict[str, Any]]:
    """The paper's five architectures in its order: ready, building (with progress), failed,
    or absent (not started here; `message` says how to build it and whether that needs a GPU
    worker). The CLI, the Python client and the web page all list exactly these."""
    entries = session.scalars(select(CatalogEntry)).all()
    entries = sorted(entries, key=lambda e: (_ORDER.get(e.name, len(_ORDER)), e.name))
    return released(session, with_absent([describe(e, e.job) for e in entries], settings))


@router.get("/{arch}", response_model=CatalogEntryOut)
def read_entry(arch: str, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """One entry as listed (an absent one too); 404 for another name."""
    entry = _row(session, arch)
    if entry is None and arch not in CATALOG_ARCHITECTURES:
        raise _unknown(arch)
    described = [describe(entry, entry.job)] if entry is not None else []
    [listed] = [e for e in with_absent(described, settings) if e["name"] == arch]
    return released(session, listed)


HEADER_READ = 4096  # bytes read to parse an .npy blob's header (ours take 128)


def _first_rows(blobs: Blobs, sha256: str, name: str, k: int
                ) -> tuple[int, Callable[[int, int], Iterator[bytes]]]:
    """The first k rows of an .npy blob as an .npy, never whole in memory nor on disk: its
    size and a reader of its bytes [start, end): its header (the blob's, with k rows), then
    the blob's first k rows, read from the store as the client takes them. (A
    cache file per k let anyone fill the disk, 2 GB per 1,024-row entry; a cut made whole in
    memory stayed there while its client did not read.)"""
    head = io.BytesIO(b"".join(blobs.read_range(sha256, 0, HEADER_READ)))
    try:
        version = np.lib.format.read_magic(head)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read_header(head)
    except ValueError as exc:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR,
                            detail=f"blob {sha256} of {name!r} is not a readable .npy ({exc})"
                            ) from None
    if not shape or fortran_order or dtype.hasobject:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR,
                            detail=f"blob {sha256} of {name!r} has no rows to cut")
    if k > shape[0]:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            detail=f"k: {k} exceeds the {shape[0]} rows of {name}")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {
        "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
        "shape": (k, *shape[1:])})
    cut_header, data_start = header.getvalue(), head.tell()
    size = len(cut_header) + k * math.prod(shape[1:]) * dtype.itemsize

    def read(start: int, end: int) -> Iterator[bytes]:
        if start < len(cut_header):
            yield cut_header[start:min(end, len(cut_header))]
        if end > len(cut_header):
            offset = data_start - len(cut_header)
            yield from blobs.read_range(sha256, offset + max(start, len(cut_header)),
                                        offset + end)
    return size, read


_RESPONSES = {200: {"content": {"application/octet-stream": {}, "image/png": {}}},
              206: {"description": "Partial content (Range)"},
              304: {"description": "Not modified (If-None-Match)"},
              404: {"description": "Unknown architecture or file, or an entry not built "
                    "here (the message says how to build it)"},
              409: {"description": "The entry is still building"},
              416: {"description": "Range not satisfiable"}}


@router.head("/{arch}/{name}", response_class=FileResponse, operation_id="head_catalog_file",
             responses=_RESPONSES)
@router.get("/{arch}/{name}", response_class=FileResponse, operation_id="download_catalog_file",
            responses=_RESPONSES)
def download(arch: str, name: str, request: Request, session: SessionDep, blobs: BlobsDep,
             settings: SettingsDep,
             k: Annotated[int | None, Query(ge=1, description="First k rows only (.npy)")] = None,
             ) -> Response:
    """nads.npy, eigenvalues.npy (optionally the first `k` rows), eval_point.npy, preview.png,
    spectrum.png of a ready entry."""
    if name not in FILES:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"name: {name!r} is not a catalog file; files: "
                            f"{', '.join(FILES)}")
    if k is not None and name not in SLICEABLE:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            detail=f"k: only {' and '.join(SLICEABLE)} can be cut to k rows")
    entry = _entry(session, settings, arch)
    if entry.status != CATALOG_READY or (entry.job_pk is None and entry.files is None):
        info = describe(entry, entry.job)
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail=f"arch: {arch!r} is {info['status']} "
                            f"({info['progress']:.0%} of at most {info['max_networks']} "
                            "networks); see GET /v1/catalog")
    if entry.files is not None:  # shipped with the repository
        sha256, media_type = entry.files.get(name), FILES[name]
    else:
        artifact = session.scalar(select(Artifact).where(Artifact.job_pk == entry.job_pk,
                                                         Artifact.name == name))
        sha256, media_type = (artifact.sha256, artifact.media_type) if artifact else (None, "")
    if sha256 is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"name: the {arch} build has no {name}")
    session.close()  # the database connection goes back to the pool before the file streams
    if k is None:
        return blob_response(request, blobs, sha256, media_type, name, CACHE_CONTROL)
    etag = f"{sha256}-k{k}"
    if etag_matches(request.headers.get("if-none-match"), f'"{etag}"'):  # 304, nothing read
        return Response(status_code=status.HTTP_304_NOT_MODIFIED,
                        headers={"ETag": f'"{etag}"', "Cache-Control": CACHE_CONTROL})
    if not blobs.exists(sha256):
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR,
                            detail=f"blob {sha256} of {name!r} is missing from the store")
    size, read = _first_rows(blobs, sha256, name, k)
    return stream_response(request, etag, size, read, media_type,
                           f"{arch}-{name.removesuffix('.npy')}-k{k}.npy", CACHE_CONTROL)
