"""One strict reader of zip archives, over the raw bytes, and the writer of their canonical copy.

Every reader of an uploaded archive must see the same members. Readers disagree on a crafted
zip: Python's `zipfile` keeps the last of two entries with one name, torch's reader (miniz,
in caffe2's PyTorchStreamReader) finds the first, and case-insensitively; some read the local
headers, some the central directory; some skip leading bytes. So the service reads an upload
once, here, refusing everything on which two readers could disagree, and hands torch only a
fresh archive written from what was read (`write_canonical`).

Refused (`ZipError`, the message starts with `file:`):
- anything but one end-of-central-directory record as the file's last 22 bytes (no comment,
  no trailing bytes), with its zip64 record right before it when it has one;
- more entries than `Limits.max_entries`, or a central directory larger than those entries can
  fill, judged from the end records alone, before the directory is read (O(1) memory);
- a central directory that does not hold exactly the entries it declares, byte for byte;
- entries that do not tile the file: the first at offset 0, each starting where the one before
  ends (its data descriptor included), the last ending where the directory starts (no leading
  or hidden bytes, no gaps, no overlaps);
- a local header that disagrees with its directory entry (name, method, flags, sizes, CRC), a
  data descriptor that disagrees, a CRC or size that the data does not have;
- encryption, compression other than stored or deflate, multi-disk archives, unknown flags or
  extra fields, symlinks, directories or other non-regular files, names outside a plain
  relative ASCII path, two names equal when compared case-insensitively;
- a total uncompressed size past `Limits.max_uncompressed`.

Torch-free: the API runs `read_directory` on an upload before anything else parses it.
"""

from __future__ import annotations

import io
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_EOCD = struct.Struct("<4sHHHHIIH")  # 22 bytes
_ZIP64_LOCATOR = struct.Struct("<4sIQI")  # 20 bytes
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")  # 56 bytes
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")  # 46 bytes
_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes
_EOCD_SIG, _LOCATOR_SIG, _ZIP64_SIG = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"
_CENTRAL_SIG, _LOCAL_SIG, _DESCRIPTOR_SIG = b"PK\x01\x02", b"PK\x03\x04", b"PK\x07\x08"
_STORED, _DEFLATED = 0, 8
_DATA_DESCRIPTOR, _UTF8, _DEFLATE_OPTIONS = 0x0008, 0x0800, 0x0006
_ALLOWED_FLAGS = _DATA_DESCRIPTOR | _UTF8 | _DEFLATE_OPTIONS
_ZIP64_EXTRA = 0x0001
# extra fields that say nothing about a member's name or bytes: torch's alignment padding
# ("FB"), Info-ZIP's times and owners, NTFS times. Anything else (Info-ZIP's Unicode path,
# which renames a member for the readers that honour it) is refused.
_INERT_EXTRAS = {0x4246, 0x5455, 0x7875, 0x000A}
_HOST_DOS, _HOST_UNIX = 0, 3
_DOS_READONLY_ARCHIVE = 0x21
_MAX_NAME = 512
_MAX_EXTRA = 256
_NAME = re.compile(r"[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*")
_MASK32 = 0xFFFFFFFF


class ZipError(ValueError):
    """The file is not a zip archive this reader accepts; the message starts with `file:`."""


@dataclass(frozen=True)
class Limits:
    max_entries: int = 20_000
    max_uncompressed: int = 4 << 30

    @property
    def max_directory_bytes(self) -> int:
        return self.max_entries * (_CENTRAL.size + _MAX_NAME + _MAX_EXTRA)


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class End:
    """What the end records declare."""

    entries: int
    directory_offset: int
    directory_size: int


@dataclass(frozen=True)
class Entry:
    name: str
    method: int
    crc: int
    compressed_size: int
    size: int
    data_offset: int  # where the (compressed) bytes start


class _Source:
    """Bounded reads at offsets of bytes or of an open file."""

    def __init__(self, source: bytes | BinaryIO) -> None:
        self._bytes = memoryview(source) if isinstance(source, bytes) else None
        self._file = None if isinstance(source, bytes) else source
        if self._bytes is not None:
            self.size = len(self._bytes)
        else:
            self.size = self._file.seek(0, io.SEEK_END)

    def read(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ZipError(f"file: {what} lies outside the file (truncated or damaged)")
        if self._bytes is not None:
            return bytes(self._bytes[offset: offset + length])
        self._file.seek(offset)
        return self._file.read(length)


def _with_source(source: Path | bytes | BinaryIO, read: Callable[[_Source], object]) -> object:
    """`read` on bytes, a file by path, or an open seekable binary file (read at offsets)."""
    if not isinstance(source, (Path, str)):
        return read(_Source(source))
    with open(source, "rb") as f:
        return read(_Source(f))


# -- the end records: O(1) -----------------------------------------------------------------
def _read_end(src: _Source, limits: Limits) -> End:
    if src.size < _EOCD.size:
        raise ZipError("file: too short to be a zip archive")
    eocd_at = src.size - _EOCD.size
    (sig, disk, directory_disk, on_disk, entries, directory_size, directory_offset,
     comment) = _EOCD.unpack(src.read(eocd_at, _EOCD.size, "the end record"))
    if sig != _EOCD_SIG or comment != 0:
        raise ZipError("file: the zip archive does not end with its end-of-central-directory "
                       "record (a comment or trailing bytes after it are not accepted)")
    directory_end = eocd_at
    locator_at = eocd_at - _ZIP64_LOCATOR.size
    if locator_at >= 0 and src.read(locator_at, 4, "the zip64 locator") == _LOCATOR_SIG:
        _, locator_disk, record_at, disks = _ZIP64_LOCATOR.unpack(
            src.read(locator_at, _ZIP64_LOCATOR.size, "the zip64 locator"))
        if record_at != locator_at - _ZIP64_EOCD.size or locator_disk != 0 or disks != 1:
            raise ZipError("file: the zip64 end record is not right before its locator")
        (sig, record_size, _, _, disk, directory_disk, on_disk, entries, directory_size,
         directory_offset) = _ZIP64_EOCD.unpack(src.read(record_at, _ZIP64_EOCD.size,
                                                         "the zip64 end record"))
        if sig != _ZIP64_SIG or record_size != _ZIP64_EOCD.size - 12:
            raise ZipError("file: a damaged zip64 end record")
        directory_end = record_at
    if disk != 0 or directory_disk != 0 or on_disk != entries:
        raise ZipError("file: multi-disk (split) zip archives are not accepted")
    if entries > limits.max_entries:
        raise ZipError(f"file: the archive declares {entries:,} entries; at most "
                       f"{limits.max_entries:,} are accepted")
    if entries == 0:
        raise ZipError("file: an empty zip archive")
    if directory_size > min(limits.max_directory_bytes,
                            entries * (_CENTRAL.size + _MAX_NAME + _MAX_EXTRA)):
        raise ZipError(f"file: a central directory of {directory_size:,} bytes for {entries:,} "
                       f"entries (at most {_CENTRAL.size + _MAX_NAME + _MAX_EXTRA} bytes each)")
    if directory_offset + directory_size != directory_end:
        raise ZipError("file: the central directory does not end where the end record starts")
    return End(entries, directory_offset, directory_size)


def read_end(source: Path | bytes | BinaryIO, limits: Limits = DEFAULT_LIMITS) -> End:
    """The entry count and central directory's place, from the file's last bytes only: refuses
    (ZipError naming the limit) an archive that declares too many entries or too large a
    directory before anything reads the directory."""
    return _with_source(source, lambda src: _read_end(src, limits))  # type: ignore[return-value]


# -- the central directory and the local headers --------------------------------------------
def _extras(data: bytes, where: str, allowed: set[int]) -> dict[int, bytes]:
    fields: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise ZipError(f"file: {where}: a truncated extra field")
        kind, length = struct.unpack_from("<HH", data, pos)
        body = data[pos + 4: pos + 4 + length]
        if len(body) != length:
            raise ZipError(f"file: {where}: a truncated extra field")
        if kind != _ZIP64_EXTRA and kind not in allowed:
            raise ZipError(f"file: {where}: an extra field of kind 0x{kind:04x}, which this "
                           "reader does not accept")
        if kind in fields:
            raise ZipError(f"file: {where}: the extra field 0x{kind:04x} appears twice")
        fields[kind] = body
        pos += 4 + length
    return fields


def _zip64(extra: dict[int, bytes], where: str, size: int, compressed: int,
           offset: int | None) -> tuple[int, int, int | None]:
    """The sizes (and offset) with the ones the header marks 0xFFFFFFFF read from zip64."""
    body = extra.get(_ZIP64_EXTRA)
    wanted = [v == _MASK32 for v in (size, compressed)] + \
        ([offset == _MASK32] if offset is not None else [])
    if body is None:
        if any(wanted):
            raise ZipError(f"file: {where}: sizes marked zip64 without a zip64 field")
        return size, compressed, offset
    values = list(struct.unpack_from(f"<{len(body) // 8}Q", body)) if len(body) % 8 == 0 \
        else None
    if values is None or len(values) != sum(wanted):
        raise ZipError(f"file: {where}: a zip64 field that does not match its header")
    it = iter(values)
    size = next(it) if wanted[0] else size
    compressed = next(it) if wanted[1] else compressed
    if offset is not None and wanted[2]:
        offset = next(it)
    return size, compressed, offset


def _check_name(raw: bytes) -> str:
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ZipError(f"file: a member name that is not plain ASCII ({raw[:60]!r})") from None
    if len(raw) > _MAX_NAME or not _NAME.fullmatch(name) or \
            any(part in (".", "..") for part in name.split("/")):
        raise ZipError(f"file: the member name {name[:80]!r} is not a plain relative path of "
                       f"letters, digits and . _ - (at most {_MAX_NAME} characters)")
    return name


def _check_attributes(made_by: int, external: int, name: str) -> None:
    host = made_by >> 8
    mode, dos = external >> 16, external & 0xFFFF
    if host not in (_HOST_DOS, _HOST_UNIX) or dos & ~_DOS_READONLY_ARCHIVE or \
            (host == _HOST_DOS and mode) or (mode and not stat.S_ISREG(mode) and
                                             stat.S_IFMT(mode)):
        raise ZipError(f"file: {name[:80]!r} is not a regular file (a symlink, directory or "
                       "another kind: external attributes "
                       f"0x{external:08x}, host {host})")


def _central_entries(src: _Source, end: End) -> list[tuple[Entry, int, bytes, int]]:
    """(entry without data_offset, local header offset, raw name, flags), in directory order."""
    directory = src.read(end.directory_offset, end.directory_size, "the central directory")
    pos = 0
    found = []
    for index in range(end.entries):
        if pos + _CENTRAL.size > len(directory):
            raise ZipError(f"file: the central directory ends within entry {index} of "
                           f"{end.entries}")
        (sig, made_by, _, flags, method, _, _, crc, compressed, size, name_len, extra_len,
         comment_len, disk, _, external, offset) = _CENTRAL.unpack_from(directory, pos)
        raw = directory[pos + _CENTRAL.size: pos + _CENTRAL.size + name_len]
        extra = directory[pos + _CENTRAL.size + name_len:
                          pos + _CENTRAL.size + name_len + extra_len]
        pos += _CENTRAL.size + name_len + extra_len + comment_len
        if sig != _CENTRAL_SIG or pos > len(directory):
            raise ZipError(f"file: central directory entry {index} is damaged")
        name = _check_name(raw)
        where = repr(name[:80])
        if flags & ~_ALLOWED_FLAGS:
            raise ZipError(f"file: {where} has flags 0x{flags:04x} (encrypted or another "
                           "feature this reader does not accept)")
        if method not in (_STORED, _DEFLATED):
            raise ZipError(f"file: {where} is compressed with method {method}; only stored "
                           "and deflate are accepted")
        if comment_len or (disk != 0 and disk != 0xFFFF) or extra_len > _MAX_EXTRA:
            raise ZipError(f"file: {where} has a comment, a disk number or a long extra field")
        _check_attributes(made_by, external, name)
        size, compressed, offset = _zip64(_extras(extra, where, _INERT_EXTRAS), where, size,
                                          compressed, offset)
        if method == _STORED and size != compressed:
            raise ZipError(f"file: {where} is stored with {compressed:,} bytes for {size:,}")
        found.append((Entry(name, method, crc, compressed, size, -1), offset, raw, flags))
    if pos != len(directory):
        raise ZipError(f"file: {len(directory) - pos:,} bytes in the central directory after "
                       f"its {end.entries:,} entries")
    return found


def _descriptor_length(src: _Source, entry: Entry, data_end: int, span_end: int) -> int:
    """The data descriptor after `entry`'s data (it must fill the bytes up to the next
    entry exactly and repeat the directory's CRC and sizes)."""
    length = span_end - data_end
    body = src.read(data_end, length, "a data descriptor") if 0 <= length <= 24 else b""
    if body[:4] == _DESCRIPTOR_SIG:
        body = body[4:]
    for fmt in ("<III", "<IQQ"):
        if len(body) == struct.calcsize(fmt) and \
                struct.unpack(fmt, body) == (entry.crc, entry.compressed_size, entry.size):
            return length
    raise ZipError(f"file: {entry.name[:80]!r}: its data descriptor is missing or disagrees "
                   "with the central directory")


def _read_directory(src: _Source, limits: Limits) -> list[Entry]:
    end = _read_end(src, limits)
    central = _central_entries(src, end)
    folded: dict[str, str] = {}
    for entry, *_ in central:
        other = folded.get(entry.name.lower())
        if other is not None:
            raise ZipError(f"file: the archive holds {entry.name[:80]!r} twice" +
                           ("" if other == entry.name else f" (also as {other[:80]!r}: "
                            "torch's reader does not tell names apart by case)"))
        folded[entry.name.lower()] = entry.name
    total = sum(entry.size for entry, *_ in central)
    if total > limits.max_uncompressed:
        raise ZipError(f"file: the archive unpacks to {total:,} bytes; at most "
                       f"{limits.max_uncompressed:,} are accepted")
    central.sort(key=lambda item: item[1])
    entries = []
    expected = 0
    for index, (entry, offset, raw, flags) in enumerate(central):
        where = repr(entry.name[:80])
        if offset != expected:
            raise ZipError(f"file: {where} starts at byte {offset:,}, not where the entry "
                           f"before it ends ({expected:,}): gaps, overlaps and leading bytes "
                           "are not accepted")
        (sig, _, local_flags, method, _, _, crc, compressed, size, name_len,
         extra_len) = _LOCAL.unpack(src.read(offset, _LOCAL.size, f"the local header of {where}"))
        local_raw = src.read(offset + _LOCAL.size, name_len, f"the local name of {where}")
        local_extra = _extras(src.read(offset + _LOCAL.size + name_len, extra_len,
                                       f"the local extra of {where}"), where, _INERT_EXTRAS)
        if sig != _LOCAL_SIG or local_raw != raw or local_flags != flags or \
                method != entry.method:
            raise ZipError(f"file: the local header of {where} disagrees with the central "
                           "directory")
        size, compressed, _ = _zip64(local_extra, where, size, compressed, None)
        declared = (crc, compressed, size)
        if declared != (entry.crc, entry.compressed_size, entry.size) and \
                not (flags & _DATA_DESCRIPTOR and declared == (0, 0, 0)):
            raise ZipError(f"file: the local header of {where} declares another CRC or size "
                           "than the central directory")
        data_offset = offset + _LOCAL.size + name_len + extra_len
        data_end = data_offset + entry.compressed_size
        span_end = central[index + 1][1] if index + 1 < len(central) else end.directory_offset
        expected = data_end
        if flags & _DATA_DESCRIPTOR:
            expected += _descriptor_length(src, entry, data_end, span_end)
        if expected > end.directory_offset:
            raise ZipError(f"file: {where} runs into the central directory")
        entries.append(Entry(entry.name, entry.method, entry.crc, entry.compressed_size,
                             entry.size, data_offset))
    if expected != end.directory_offset:
        raise ZipError(f"file: {end.directory_offset - expected:,} bytes between the last "
                       "entry and the central directory")
    return entries


def read_directory(source: Path | bytes, limits: Limits = DEFAULT_LIMITS) -> list[Entry]:
    """Every entry of the archive, in file order, after the checks above (nothing is
    decompressed)."""
    return _with_source(source, lambda src: _read_directory(src, limits))  # type: ignore[return-value]


def read_member(data: bytes, entry: Entry) -> bytes:
    """The bytes of one entry of `data` (from `read_directory(data)`), decompressed within its
    declared size and checked against its CRC."""
    raw = memoryview(data)[entry.data_offset: entry.data_offset + entry.compressed_size]
    if entry.method == _STORED:
        body = bytes(raw)
    else:
        inflater = zlib.decompressobj(-15)
        try:
            body = inflater.decompress(raw, entry.size + 1)
        except zlib.error as exc:
            raise ZipError(f"file: {entry.name[:80]!r} does not inflate ({exc})") from None
        if not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
            raise ZipError(f"file: {entry.name[:80]!r} inflates to more or other bytes than "
                           "its entry holds")
    if len(body) != entry.size or zlib.crc32(body) != entry.crc:
        raise ZipError(f"file: {entry.name[:80]!r} does not have the size and CRC its "
                       "entry declares")
    return body


def read_members(data: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, bytes]:
    """Name -> bytes of every member, in file order, after every check above."""
    return {entry.name: read_member(data, entry) for entry in read_directory(data, limits)}


def write_canonical(members: dict[str, bytes]) -> bytes:
    """A fresh archive of `members` (stored, in the given order, no descriptors, extras or
    comments): the only archive torch ever reads. Python's zipfile writes it: its output is
    plain, and `read_directory` accepts it (tests/nadcore/uploaded/test_strict_zip.py)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, body in members.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.create_system = _HOST_UNIX
            archive.writestr(info, body)
    return out.getvalue()
