"""Streaming multipart uploads: the file part goes to a temporary file in the blob store while
it is hashed and counted, so a file over the limit is refused (413) without being held whole,
in memory or on disk. Torch- and numpy-free: the API only checks the magic bytes (`.npz` is a
zip, `.npy` starts with `\\x93NUMPY`); the worker parses the arrays.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from fastapi import HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy.orm import Session

from store.blobs import Blobs, record_blob
from store.models import DATASET_UPLOAD, NADS_UPLOAD

UPLOAD_KINDS = (DATASET_UPLOAD, NADS_UPLOAD)
MAGIC = {DATASET_UPLOAD: (b"PK\x03\x04", ".npz (a zip archive, as numpy.savez writes)"),
         NADS_UPLOAD: (b"\x93NUMPY", ".npy (as numpy.save writes)")}
_MAX_FIELD = 1024  # bytes of a non-file form field
# Parts of one form (`file` and a few fields): each field is held in memory. (python-multipart
# bounds each part's headers itself: 8 headers of 4,224 bytes.)
_MAX_PARTS = 16
_OVERHEAD = 64 * 1024  # multipart framing allowed on top of the file in Content-Length


def too_large(limit: int, setting: str = "NADS_MAX_UPLOAD_BYTES") -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"file: upload exceeds the limit of {limit:,} bytes ({setting})",
    )


def bad_request(field_name: str, message: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                         detail=[{"field": field_name, "msg": f"{field_name}: {message}",
                                  "type": "value_error", "loc": ["body", field_name]}])


@dataclass
class ReceivedFile:
    """The `file` part, written to `path` (a temporary file inside the blob store)."""

    path: Path | None = None
    filename: str = ""
    size: int = 0
    sha256: str = ""
    head: bytes = b""
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


class _Receiver:
    """python-multipart callbacks: fields into a dict, the `file` part into a hashed file."""

    def __init__(self, blobs: Blobs, limit: int, setting: str) -> None:
        self.blobs, self.limit, self.setting = blobs, limit, setting
        self.result = ReceivedFile()
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._parts = 0
        self._name = ""
        self._is_file = False
        self._field = bytearray()
        self._out = None
        self._digest = hashlib.sha256()
        self.error: HTTPException | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, a, b: self._add("_header_field", d[a:b]),
            "on_header_value": lambda d, a, b: self._add("_header_value", d[a:b]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _add(self, name: str, data: bytes) -> None:
        setattr(self, name, getattr(self, name) + data)

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > _MAX_PARTS:
            raise self._fail(bad_request("form", f"more than {_MAX_PARTS} parts"))
        self._headers, self._field = {}, bytearray()

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        self._is_file = self._name == "file"
        if self._is_file:
            if self.result.path is not None:
                raise self._fail(bad_request("file", "give exactly one file"))
            raw = options.get(b"filename", b"upload").decode("utf-8", "replace")
            self.result.filename = os.path.basename(raw.replace("\\", "/"))[:255] or "upload"
            fd, name = _mkstemp(self.blobs.tmp_dir())
            self.result.path = Path(name)
            self._out = os.fdopen(fd, "wb")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if not self._is_file:
            self._field += chunk
            if len(self._field) > _MAX_FIELD:
                raise self._fail(bad_request(self._name or "form",
                                             f"field longer than {_MAX_FIELD} bytes"))
            return
        self.result.size += len(chunk)
        if self.result.size > self.limit:
            raise self._fail(too_large(self.limit, self.setting))
        if len(self.result.head) < 16:
            self.result.head += chunk[: 16 - len(self.result.head)]
        self._digest.update(chunk)
        self._out.write(chunk)

    def _part_end(self) -> None:
        # the file stays open until the body ends: `close_file` syncs it to disk off the
        # event loop (an fsync of tens of MB would stall every other request meanwhile)
        if not self._is_file and self._name:
            self.result.fields[self._name] = self._field.decode("utf-8", "replace")

    def close_file(self) -> None:
        if self._out is not None:
            self._out.flush()
            os.fsync(self._out.fileno())
            self._out.close()
            self._out = None
            self.result.sha256 = self._digest.hexdigest()

    def _fail(self, error: HTTPException) -> HTTPException:
        self.error = error
        return error

    def abort(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        self.result.discard()


def _mkstemp(folder: Path) -> tuple[int, str]:
    return tempfile.mkstemp(dir=folder, prefix="upload-")


async def receive_upload(request: Request, blobs: Blobs, limit: int,
                         setting: str = "NADS_MAX_UPLOAD_BYTES",
                         fields: str = "a 'kind' field") -> ReceivedFile:
    """Parses a multipart/form-data body as it arrives. Raises 413 once the file passes
    `limit` bytes (or when Content-Length already says it will), 422 for a malformed form."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise bad_request("file", f"send multipart/form-data with a 'file' part and {fields}")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + _OVERHEAD:
        raise too_large(limit, setting)
    receiver = _Receiver(blobs, limit, setting)
    parser = MultipartParser(boundary, receiver.callbacks())
    received = False
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
        await run_in_threadpool(receiver.close_file)
        received = True
    except HTTPException:
        raise
    except OSError as exc:  # the blob store's disk, not the client: 507 when full, else 503
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise HTTPException(
            status.HTTP_507_INSUFFICIENT_STORAGE if full else status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"file: the blob store cannot take the upload now: {exc.strerror or exc}",
        ) from None
    except Exception as exc:  # noqa: BLE001 (python-multipart's parse errors, a disconnect)
        if receiver.error is not None:
            raise receiver.error from None
        raise bad_request("file", f"malformed multipart body: {exc}") from None
    finally:  # whatever stopped it (a cancelled task too), the partial file goes at once
        if not received:
            receiver.abort()
    return receiver.result


RowT = TypeVar("RowT")


async def store_upload(session: Session, blobs: Blobs, received: ReceivedFile,
                       make_row: Callable[[], RowT],
                       before: Callable[[], None] | None = None) -> RowT:
    """Runs `before` (a check that may refuse, e.g. the storage quota, in the transaction that
    stores), adopts the received file into the blob store, records the blob and the row
    `make_row` builds, commits, and returns the row. The caller discards `received` in a
    `finally` (a no-op once adopted)."""

    def store() -> RowT:
        if before is not None:
            before()
        record_blob(session, received.sha256, received.size)  # before the file: store/blobgc.py
        blobs.adopt(received.path, received.sha256)
        row = make_row()
        session.add(row)
        session.commit()
        return row

    return await run_in_threadpool(store)


def check_upload(received: ReceivedFile) -> str:
    """The upload's kind, after the light checks: a `kind` field, one file, its magic bytes."""
    kind = received.fields.get("kind", "").strip()
    if kind not in UPLOAD_KINDS:
        given = repr(kind) if kind else "missing"
        raise bad_request("kind", f"{given}; expected 'dataset' (.npz) or 'nads' (.npy)")
    if received.path is None:
        raise bad_request("file", "missing; send the file as the multipart part 'file'")
    magic, what = MAGIC[kind]
    if not received.head.startswith(magic):
        raise bad_request("file", f"{received.filename!r} is not a {what}: its first bytes "
                          f"are {received.head[:8]!r}, a {kind} upload starts with {magic!r}")
    return kind
