"""Zip archives that readers disagree on or that cost memory to list, torch-free (the API's
tests use them too): written entry by entry, duplicates and all, the way an attacker would.
`tests/hostile_models.py` builds the model archives of issue 25 from them."""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
import zlib


def members_of(data: bytes) -> list[tuple[str, bytes]]:
    """(name, bytes) of every entry of a zip, in order, duplicates included."""
    z = zipfile.ZipFile(io.BytesIO(data))
    return [(info.filename, z.open(info).read()) for info in z.infolist()]


def write_zip(members: list[tuple[str, bytes]]) -> bytes:
    """A zip of `members` as listed (duplicate names kept, in that order: Python's zipfile then
    reads the last copy of a name, torch's reader the first)."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            for name, body in members:
                z.writestr(name, body)
    return out.getvalue()


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = digits[d] + out
        if n == 0:
            return out


def many_entries_zip(count: int, root: str = "m") -> bytes:
    """A zip of `count` empty stored entries `<root>/<i in base 36>`, with zip64 end records
    past 65,535 entries: 500,000 entries make 45 MB. Written with struct, not zipfile, so that
    building it takes a second."""
    local, central = [], []
    offset = 0
    crc = zlib.crc32(b"")
    for i in range(count):
        name = f"{root}/{_base36(i)}".encode()
        header = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0x21, crc, 0, 0,
                             len(name), 0) + name
        local.append(header)
        central.append(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 0, 0,
                                   0x21, crc, 0, 0, len(name), 0, 0, 0, 0, 0, offset) + name)
        offset += len(header)
    directory = b"".join(central)
    zip64 = count > 0xFFFF
    tail = b""
    end_offset = offset + len(directory)
    if zip64:
        tail += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count,
                            len(directory), offset)
        tail += struct.pack("<4sIQI", b"PK\x06\x07", 0, end_offset, 1)
    short = min(count, 0xFFFF)
    tail += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, short, short, len(directory),
                        offset, 0)
    return b"".join(local) + directory + tail
