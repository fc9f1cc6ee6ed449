"""The blob store in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW...): `NADS_BLOB_URL=
s3://bucket/prefix`, so that the API and GPU workers on other hosts share blobs with no shared
filesystem. Keys are `<prefix>/<sha[:2]>/<sha>`, as the directory store's paths.

The same properties as the directory store (store/blobs.py):
- content addressing: a blob's key is its sha256, computed locally before anything is sent
  (`stage` hashes into the local tmp/ folder, then `put` uploads);
- a blob visible whole or not at all: S3 makes an object visible only once its PUT (or its
  multipart upload) completes;
- idempotent writes: an object already there is not sent again (same key, same bytes);
- the collector's `trash` (copy to `<prefix>/trash/<sha>.<time_ns>.<random>`, then delete),
  `restore`, `remove`, `trashed` and `stored` (listings), `verify` and `check_writable`.

Readers that need a local file (the worker's partials, archives and datasets; the catalog's
row slices) get one from `path`: a read-through cache under `<NADS_BLOB_DIR>/cache`, filled by
downloading to tmp/ while hashing and renaming into place, so it holds whole, verified blobs and,
being content-addressed, is never stale. A hit refreshes the file's mtime; `clean_tmp` (the
collector's pass) drops cache files unused for a day. Downloads through the API stream from
the bucket with S3 range GETs instead (`size`, `read_range`; api/files.py).

Client: boto3 (botocore), the reference S3 client: it reads the standard AWS variables
(AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION or AWS_DEFAULT_REGION), retries throttling and network errors, checksums each
request's payload, and sends large files as concurrent multipart uploads (s3transfer).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from store.blobs import _CHUNK, _SHA, SEND_CHUNK, TRASH, Staged, remove_older, stage_into

_MISSING = {"404", "NoSuchKey", "NotFound"}
_BLOB_KEY = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{64})$")
CACHE_MAX_IDLE_S = 24 * 3600.0  # a cached blob unused this long leaves the node's cache
_TRANSFER = TransferConfig(multipart_threshold=64 * 2**20, multipart_chunksize=16 * 2**20,
                           max_concurrency=8)


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING


def make_client() -> Any:
    """An S3 client configured by the AWS variables. Path-style addressing whenever an endpoint
    is given (MinIO and most S3-compatible servers are not set up for virtual-host buckets)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(retries={"mode": "standard", "max_attempts": 5},
                    s3={"addressing_style": "path" if endpoint else "auto"})
    return boto3.session.Session().client("s3", config=config)


class S3BlobStore:
    """Blobs in `bucket` under `prefix`; this node's staging and cache under `local_dir`."""

    remote = True

    def __init__(self, bucket: str, prefix: str, local_dir: Path, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.local_dir = Path(local_dir)
        self.client = client if client is not None else make_client()
        self._base = f"{self.prefix}/" if self.prefix else ""

    @classmethod
    def from_url(cls, url: str, local_dir: Path) -> S3BlobStore:
        if not url.startswith("s3://"):
            raise ValueError(f"blob_url: {url!r} is not s3://bucket/prefix")
        bucket, _, prefix = url[5:].partition("/")
        if not bucket:
            raise ValueError(f"blob_url: {url!r} names no bucket")
        return cls(bucket, prefix, local_dir)

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, sha256: str) -> str:
        if not _SHA.match(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return f"{self._base}{sha256[:2]}/{sha256}"

    def _error(self, what: str, exc: Exception) -> OSError:
        return OSError(errno.EIO, f"blob store {self.location} {what}: {exc}")

    # -- readers ----------------------------------------------------------------------------
    def cache_path(self, sha256: str) -> Path:
        self.key(sha256)  # validates
        return self.local_dir / "cache" / sha256[:2] / sha256

    def path(self, sha256: str) -> Path:
        """A local copy of the blob (downloaded once, hashed, renamed into the cache); a path
        that is not a file when the bucket has no such blob."""
        local = self.cache_path(sha256)
        if local.is_file():
            with contextlib.suppress(OSError):
                os.utime(local)  # recently used: clean_tmp keeps it
            return local
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256))["Body"]
        except ClientError as exc:
            if _missing(exc):
                return local
            raise self._error(f"cannot read {sha256}", exc) from exc
        except BotoCoreError as exc:
            raise self._error(f"cannot read {sha256}", exc) from exc
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp_dir(), prefix="fetch-")
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, contextlib.closing(body):
                for chunk in body.iter_chunks(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != sha256:
                raise OSError(errno.EIO, f"blob store {self.location}: {sha256} does not hash "
                              f"to its name (got {digest.hexdigest()})")
            local.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, local)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(f"cannot read {sha256}", exc) from exc
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        return local

    def _head(self, key: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise

    def exists(self, sha256: str) -> bool:
        return self._head(self.key(sha256)) is not None

    def size(self, sha256: str) -> int | None:
        head = self._head(self.key(sha256))
        return None if head is None else int(head["ContentLength"])

    def read_range(self, sha256: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of the blob from one S3 range GET, in chunks."""
        if end <= start:
            return
        body = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256),
                                      Range=f"bytes={start}-{end - 1}")["Body"]
        with contextlib.closing(body):
            yield from body.iter_chunks(SEND_CHUNK)

    # -- writers ----------------------------------------------------------------------------
    def tmp_dir(self) -> Path:
        """Local folder for staged files and uploads in progress (then sent to the bucket)."""
        folder = self.local_dir / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def stage(self, source: Path) -> Staged:
        return stage_into(self.tmp_dir, self.location, source)

    def adopt(self, tmp_path: Path, sha256: str) -> Path:
        """Uploads a complete local file that hashes to `sha256` unless the bucket has it
        already, then keeps the file as the node's cached copy."""
        key = self.key(sha256)
        try:
            if self._head(key) is None:
                self.client.upload_file(str(tmp_path), self.bucket, key, Config=_TRANSFER,
                                        ExtraArgs={"ContentType": "application/octet-stream"})
        except (ClientError, BotoCoreError) as exc:
            raise self._error(f"cannot take {sha256}", exc) from exc
        final = self.cache_path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path, final)
        return final

    def put(self, staged: Staged) -> Path:
        return self.adopt(staged.path, staged.sha256)

    def put_file(self, source: Path) -> tuple[str, int]:
        staged = self.stage(source)
        try:
            self.put(staged)
        finally:
            staged.discard()
        return staged.sha256, staged.size

    # -- the collector ----------------------------------------------------------------------
    def trash(self, sha256: str) -> str | None:
        """Copies the object to trash/ and deletes it (readers no longer find it); returns the
        trash key, or None when the object is not there."""
        key = self.key(sha256)
        target = f"{self._base}{TRASH}/{sha256}.{time.time_ns()}.{uuid.uuid4().hex[:8]}"
        try:
            self.client.copy({"Bucket": self.bucket, "Key": key}, self.bucket, target,
                             Config=_TRANSFER)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        self.client.delete_object(Bucket=self.bucket, Key=key)
        self.cache_path(sha256).unlink(missing_ok=True)
        return target

    def restore(self, trashed: str) -> None:
        """Copies a trashed object back in place (identical bytes may be there again), then
        deletes the trash copy."""
        sha = trashed.rsplit("/", 1)[-1].split(".", 1)[0]
        try:
            self.client.copy({"Bucket": self.bucket, "Key": trashed}, self.bucket,
                             self.key(sha), Config=_TRANSFER)
        except ClientError as exc:
            if not _missing(exc):
                raise
            return
        self.client.delete_object(Bucket=self.bucket, Key=trashed)

    def remove(self, trashed: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=trashed)

    def _list(self, prefix: str) -> Iterator[dict]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=prefix)
        for page in pages:
            yield from page.get("Contents", ())

    def trashed(self) -> Iterator[tuple[str, str, float]]:
        """Objects in trash/: (key, sha256, seconds since they were trashed)."""
        now = time.time_ns()
        for obj in self._list(f"{self._base}{TRASH}/"):
            parts = obj["Key"].rsplit("/", 1)[-1].split(".")
            if len(parts) == 3 and _SHA.match(parts[0]) and parts[1].isdigit():
                yield obj["Key"], parts[0], (now - int(parts[1])) / 1e9

    def stored(self) -> Iterator[tuple[str, int, float]]:
        """Every blob in place: (sha256, size, upload time)."""
        for obj in self._list(self._base):
            match = _BLOB_KEY.match(obj["Key"][len(self._base):])
            if match and match[2].startswith(match[1]):
                yield match[2], int(obj["Size"]), obj["LastModified"].timestamp()

    def clean_tmp(self, older_than_s: float) -> int:
        """Removes this node's abandoned local files (tmp/ older than `older_than_s`, cached
        blobs unused for CACHE_MAX_IDLE_S) and the bucket's multipart uploads under the prefix
        begun more than `older_than_s` ago (a writer that died mid-upload)."""
        removed = remove_older(self.local_dir / "tmp", older_than_s)
        cache = self.local_dir / "cache"
        if cache.is_dir():
            for folder in os.scandir(cache):
                if folder.is_dir():
                    removed += remove_older(Path(folder.path), CACHE_MAX_IDLE_S)
        horizon = datetime.now(UTC) - timedelta(seconds=older_than_s)
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self._base)
        for page in pages:
            for upload in page.get("Uploads", ()):
                if upload["Initiated"] < horizon:
                    with contextlib.suppress(ClientError):
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                        removed += 1
        return removed

    def verify(self, sha256: str) -> bool:
        """True when the bucket's bytes still hash to their name (read from the bucket, not
        the cache); FileNotFoundError when the object is not there."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256))["Body"]
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(errno.ENOENT,
                                        f"no blob {sha256} in {self.location}") from None
            raise
        digest = hashlib.sha256()
        with contextlib.closing(body):
            for chunk in body.iter_chunks(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest() == sha256

    def check_writable(self) -> None:
        """Raises OSError when the local staging folder or the bucket cannot take a new file
        (used by /readyz: writes and deletes an empty object under `<prefix>/tmp/`)."""
        with tempfile.NamedTemporaryFile(dir=self.tmp_dir(), prefix="ready-"):
            pass
        key = f"{self._base}tmp/ready-{uuid.uuid4().hex}"
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=b"")
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._error("cannot take a new object", exc) from exc
