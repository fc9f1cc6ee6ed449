"""Shapes and dtypes of the arrays in an uploaded `.npz` (or `.npy`), read from their `.npy`
headers only, at upload time: nothing is decompressed but the headers, so a 205 kB archive that
declares 200,000 images is judged by what it declares before any worker loads it.

Bounded first: the archive's member count (from its end-of-central-directory records,
zip64's included, by `nadcore.uploaded.strict_zip.read_end`, before Python's zipfile builds its
member list), the sizes its central directory declares, then the
sizes its headers declare (`NADS_MAX_DATASET_DECOMPRESSED_BYTES`, 413). Each member must be a
plain numeric `.npy` (bool, integer or float; no objects, no structured dtypes) whose declared
size is exactly its header plus its data, stored or deflated (bzip2 and LZMA members, which
zipfile inflates a whole read of at once whatever their declared sizes, are refused). A
dataset must also have the keys, ranks, dtypes and lengths `nadcore.poison.datasets.load_npz`
needs (values are still checked by the worker).
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from nadcore.uploaded.strict_zip import Limits, ZipError, read_end

MAX_MEMBERS = 16  # x, y, x_test, y_test and a few more
NUMERIC_KINDS = "biuf"
LIMIT_SETTING = "NADS_MAX_DATASET_DECOMPRESSED_BYTES"
# What numpy writes: stored (savez) and deflate (savez_compressed), the methods whose reads
# zipfile bounds; it inflates the others (bzip2, LZMA) without a bound on one read's output.
ACCEPTED_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA"}


class ArchiveError(ValueError):
    """A refused archive: `status` 413 (too large once decompressed) or 422 (malformed)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ArrayHeader:
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def as_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype.str}


def from_json(arrays: dict[str, Any]) -> dict[str, ArrayHeader]:
    return {k: ArrayHeader(tuple(v["shape"]), np.dtype(v["dtype"])) for k, v in arrays.items()}


def read_header(stream: BinaryIO, name: str) -> tuple[ArrayHeader, int]:
    """The array header of a `.npy` stream and the header's length in bytes."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f".npy format version {version} is not supported (1.0 or 2.0)")
    except Exception as exc:  # noqa: BLE001
        # Not only ValueError: numpy's reader passes a header that is not a Python literal to
        # `tokenize` (TokenError for a truncated dict or string), and a nested one to the
        # compiler (RecursionError, MemoryError); a zip member's stream raises BadZipFile.
        # Whatever the reason, the upload is refused (422), never a 500.
        raise ArchiveError(f"{name} is not a readable .npy array: {type(exc).__name__}: "
                           f"{str(exc)[:200]}") from None
    if any(s < 0 for s in shape):
        raise ArchiveError(f"{name} declares the shape {list(shape)[:8]}: a negative length")
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in NUMERIC_KINDS:
        raise ArchiveError(f"{name} has dtype {str(dtype)[:80]}; only bool, integer and float "
                           "arrays are accepted")
    return ArrayHeader(tuple(int(s) for s in shape), dtype), stream.tell()


def _member_count(source: Path | BinaryIO) -> int:
    """Entries of the zip, from its end records (zip64's included) before anything reads its
    central directory: a crafted archive may declare millions (`nadcore.uploaded.strict_zip`)."""
    try:  # a result from the sandbox is an open file over its bytes: read at offsets, no copy
        return read_end(source, Limits(max_entries=MAX_MEMBERS)).entries
    except ZipError as exc:
        raise ArchiveError(str(exc).removeprefix("file: ").replace(
            "are accepted", "are accepted in a dataset (x, y, x_test, y_test)")) from None


def _check_size(total: int, limit: int, what: str, setting: str) -> None:
    if total > limit:
        raise ArchiveError(f"the arrays {what} {total:,} bytes once decompressed, past the "
                           f"limit of {limit:,} bytes ({setting})", status=413)


def read_npz(path: Path | BinaryIO, limit: int, setting: str = LIMIT_SETTING
             ) -> dict[str, ArrayHeader]:
    """The arrays of an `.npz` by key (member name without `.npy`), from their headers: once
    this returns, `np.load` of the same bytes decompresses at most `limit` bytes (zipfile reads
    no member past its declared size, and each declared size is its header's)."""
    _member_count(path)
    try:
        archive = zipfile.ZipFile(path)
    except Exception as exc:  # noqa: BLE001 (BadZipFile, OSError, NotImplementedError, ...)
        raise ArchiveError(f"not a readable zip archive: {type(exc).__name__}: "
                           f"{str(exc)[:200]}") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise ArchiveError(f"the archive has {len(members)} members; at most {MAX_MEMBERS}")
        _check_size(sum(m.file_size for m in members), limit, "declare", setting)
        arrays: dict[str, ArrayHeader] = {}
        total = 0
        for member in members:
            name = member.filename[:100]
            if not member.filename.endswith(".npy") or member.is_dir():
                raise ArchiveError(f"member {name!r} is not a .npy array")
            if member.compress_type not in ACCEPTED_METHODS:
                # zipfile inflates a bzip2 or LZMA read whole before it cuts it to the
                # declared size: 4 kB of bzip2 is gigabytes in memory, whatever is declared
                raise ArchiveError(f"member {name!r} is compressed with "
                                   f"{METHOD_NAMES.get(member.compress_type, 'method')} "
                                   f"({member.compress_type}); only stored or deflate members "
                                   "(as numpy.savez and savez_compressed write) are accepted")
            key = member.filename[: -len(".npy")]
            if key in arrays:
                raise ArchiveError(f"array {key[:100]!r} appears twice")
            try:  # zipfile refuses a member many ways: BadZipFile, NotImplementedError (its
                # compression or version), RuntimeError (encrypted), OSError (a bad offset)
                with archive.open(member) as stream:
                    header, header_len = read_header(stream, f"member {name!r}")
            except ArchiveError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise ArchiveError(f"member {name!r} cannot be read: {type(exc).__name__}: "
                                   f"{str(exc)[:200]}") from None
            total += header.nbytes
            _check_size(total, limit, "hold at least", setting)
            if member.file_size != header_len + header.nbytes:
                raise ArchiveError(f"member {name!r} holds {member.file_size:,} bytes; its "
                                   f"header declares {header_len + header.nbytes:,}")
            arrays[key] = header
    return arrays


def read_npy(path: Path) -> ArrayHeader:
    """The header of an uploaded `.npy`, checked against the file's size."""
    with open(path, "rb") as f:
        header, header_len = read_header(f, "the .npy")
        f.seek(0, 2)
        size = f.tell()
    if size != header_len + header.nbytes:
        raise ArchiveError(f"the .npy holds {size:,} bytes; its header declares "
                           f"{header_len + header.nbytes:,} (shape {list(header.shape)})")
    return header


def _images(arrays: dict[str, ArrayHeader], key: str) -> tuple[int, tuple[int, ...]]:
    """(N, (C, H, W)) of an image array, as `nadcore.poison.datasets` reads it."""
    a = arrays[key]
    if len(a.shape) != 4:
        raise ArchiveError(f"{key}: expected a 4-D array (uint8 N x H x W x C or float "
                           f"N x C x H x W), got shape {list(a.shape)}")
    if a.shape[0] == 0:
        raise ArchiveError(f"{key}: no images")
    if a.dtype == np.uint8:
        return a.shape[0], (a.shape[3], a.shape[1], a.shape[2])
    if a.dtype.kind == "f":
        return a.shape[0], a.shape[1:]
    raise ArchiveError(f"{key}: dtype {a.dtype} is neither uint8 (N x H x W x C) nor float "
                       "(N x C x H x W in [0, 1])")


def _labels(arrays: dict[str, ArrayHeader], key: str, num: int) -> None:
    a = arrays[key]
    if len(a.shape) != 1:
        raise ArchiveError(f"{key}: expected a 1-D array of labels, got shape {list(a.shape)}")
    if a.dtype.kind not in "iu":
        raise ArchiveError(f"{key}: labels must be integers, got dtype {a.dtype}")
    if a.shape[0] != num:
        x_key = "x" if key == "y" else "x_test"
        raise ArchiveError(f"{key}: {a.shape[0]} labels for {num} images in {x_key}")


def dataset_train_size(arrays: dict[str, ArrayHeader]) -> int:
    """Training images of a dataset upload (x, or 80 % of it without x_test), after checking
    the keys, ranks, dtypes and lengths `nadcore.poison.datasets.load_npz` needs."""
    keys = set(arrays)
    for key in ("x", "y"):
        if key not in keys:
            raise ArchiveError(f"{key}: missing from the .npz (it has "
                               f"{sorted(k[:40] for k in keys) or 'none'})")
    if ("x_test" in keys) != ("y_test" in keys):
        missing = "y_test" if "x_test" in keys else "x_test"
        raise ArchiveError(f"{missing}: give x_test and y_test together")
    n, image = _images(arrays, "x")
    _labels(arrays, "y", n)
    if "x_test" not in keys:
        if n < 2:
            raise ArchiveError("x: at least 2 images are needed for a train/test split")
        return n - max(1, n // 5)
    n_test, test_image = _images(arrays, "x_test")
    _labels(arrays, "y_test", n_test)
    if tuple(test_image) != tuple(image):
        raise ArchiveError(f"x_test: images of shape {list(test_image)} (C, H, W), x has "
                           f"{list(image)}")
    return n


def image_shape(arrays: dict[str, ArrayHeader]) -> tuple[int, ...]:
    """(C, H, W) of a checked dataset's images (`dataset_train_size` first)."""
    return tuple(_images(arrays, "x")[1])


def inspect_upload(path: Path, kind: str, limit: int) -> dict[str, Any]:
    """The `arrays` recorded with an upload: {key: {shape, dtype}} of a dataset (checked as a
    dataset), {"nads": {shape, dtype}} of a NAD array. ArchiveError when refused."""
    if kind == "dataset":
        arrays = read_npz(path, limit)
        dataset_train_size(arrays)
        return {k: v.as_json() for k, v in arrays.items()}
    return {"nads": read_npy(path).as_json()}
