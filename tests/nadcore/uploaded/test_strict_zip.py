"""The strict zip reader (nadcore.uploaded.strict_zip) and the archive layouts
(nadcore.uploaded.archive_format):
every way two readers could see different members is refused, before torch reads anything;
an archive declaring 500,000 entries is refused from its end records alone; and damaged
archives (random truncations and bit flips) only ever raise our own error."""

from __future__ import annotations

import io
import random
import stat
import struct
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from torch import nn

from nadcore.uploaded.archive_format import ArchiveFormatError, read_layout
from nadcore.uploaded.strict_zip import (
    Limits,
    ZipError,
    read_directory,
    read_end,
    read_members,
    write_canonical,
)
from tests.bad_models import scripted_bytes
from tests.hostile_zips import many_entries_zip, members_of, write_zip


@pytest.fixture(scope="module")
def scripted() -> bytes:
    """A small TorchScript archive as torch writes it (deflated code, data descriptors,
    alignment padding)."""
    return scripted_bytes(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1)))


def test_torchs_own_archive_reads_like_pythons_zipfile(scripted: bytes) -> None:
    members = read_members(scripted)
    assert members == dict(members_of(scripted))
    canonical = write_canonical(members)
    assert read_members(canonical) == members


def _refused(data: bytes, match: str) -> None:
    with pytest.raises(ZipError, match=match):
        read_members(data)


def test_duplicate_names_are_refused_also_when_they_differ_by_case(scripted: bytes) -> None:
    members = members_of(scripted)
    name, body = members[-1]
    _refused(write_zip([*members, (name, body)]), "twice")
    _refused(write_zip([*members, (name.upper(), body)]), "by case")


def test_bytes_before_between_or_after_entries_are_refused(scripted: bytes) -> None:
    _refused(scripted + b"\0", "does not end with its end-of-central-directory")
    commented = io.BytesIO(scripted)
    with zipfile.ZipFile(commented, "a") as z:
        z.comment = b"hello"
    _refused(commented.getvalue(), "does not end with")
    # leading bytes, with every offset shifted so that Python's zipfile still reads it
    shifted = io.BytesIO()
    shifted.write(b"JUNK" * 16)
    with zipfile.ZipFile(shifted, "a") as z:
        for name, body in members_of(scripted):
            z.writestr(name, body)
    assert zipfile.ZipFile(io.BytesIO(shifted.getvalue())).testzip() is None
    _refused(shifted.getvalue(), "leading bytes are not accepted")


def _patched(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new):]


def _plain(members: list[tuple[str, bytes]]) -> bytes:
    return write_zip(members)


def test_headers_that_disagree_are_refused() -> None:
    data = _plain([("m/a", b"abc"), ("m/b", b"defg")])
    second = data.index(b"PK\x03\x04", 1)
    _refused(_patched(data, second + 30, b"c"), "disagrees with the central directory")
    _refused(_patched(data, second + 14, b"\0\0\0\0"), "another CRC or size")
    flagged = _patched(data, second + 6, b"\x01\x00")  # encrypted, local header only
    _refused(flagged, "disagrees with the central directory")
    central = data.index(b"PK\x01\x02")
    both = _patched(flagged, central + 8, b"\x01\x00")  # and in the directory
    _refused(both, "encrypted")


def test_a_data_descriptor_that_disagrees_is_refused(scripted: bytes) -> None:
    at = scripted.index(b"PK\x07\x08")
    _refused(_patched(scripted, at + 4, b"\0\0\0\0"), "data descriptor")


def test_a_crc_or_inflated_size_that_the_data_does_not_have_is_refused() -> None:
    data = _plain([("m/a", b"abc")])
    at = data.index(b"abc")
    _refused(_patched(data, at, b"abd"), "size and CRC")
    deflated = io.BytesIO()
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("m/a", b"x" * 1_000_000)  # a bomb declaring 999 bytes
    raw = deflated.getvalue()
    central = raw.index(b"PK\x01\x02")
    local_size, central_size = 22, central + 24  # declare 999 bytes in both headers
    smaller = _patched(_patched(raw, local_size, struct.pack("<I", 999)), central_size,
                       struct.pack("<I", 999))
    _refused(smaller, "inflates to more")


def test_symlinks_directories_and_other_methods_are_refused() -> None:
    for mode in (stat.S_IFLNK | 0o777, stat.S_IFDIR | 0o755):
        info = zipfile.ZipInfo("m/link")
        info.external_attr = mode << 16
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            z.writestr(info, b"/etc/passwd")
        _refused(out.getvalue(), "not a regular file")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_BZIP2) as z:
        z.writestr("m/a", b"abc")
    _refused(out.getvalue(), "method 12")


def test_a_unicode_path_extra_field_is_refused() -> None:
    info = zipfile.ZipInfo("m/a")
    info.extra = struct.pack("<HH", 0x7075, 5) + b"\x01abcd"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(info, b"abc")
    _refused(out.getvalue(), "0x7075")


@pytest.mark.parametrize("name", ["m/../x", "/m/x", "m\\x", "m//x", "m/\u00e9", "m/a b"])
def test_names_that_are_not_plain_relative_paths_are_refused(name: str) -> None:
    _refused(_plain([(name, b"x")]), "member name")


def test_an_end_record_that_miscounts_the_directory_is_refused() -> None:
    data = _plain([("m/a", b"abc"), ("m/b", b"defg")])
    end = len(data) - 22
    _refused(_patched(data, end + 8, struct.pack("<HH", 1, 1)), "after its 1 entries")
    _refused(_patched(data, end + 8, struct.pack("<HH", 3, 3)), "ends within entry 2")
    _refused(_patched(data, end + 12, struct.pack("<I", 100)), "does not end where")


def test_many_entries_are_refused_from_the_end_in_constant_memory(tmp_path: Path) -> None:
    path = tmp_path / "many.pt"
    path.write_bytes(many_entries_zip(500_000))
    assert path.stat().st_size > 40_000_000
    tracemalloc.start()
    with pytest.raises(ZipError, match="declares 500,000 entries; at most 20,000"):
        read_end(path)
    with pytest.raises(ArchiveFormatError, match="500,000 entries"):
        read_layout(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000, peak
    # the generator writes a zip Python's zipfile reads: the count is real, not a forged field
    small = many_entries_zip(70_000)
    assert len(zipfile.ZipFile(io.BytesIO(small)).infolist()) == 70_000
    assert len(read_directory(small, Limits(max_entries=70_000))) == 70_000
    # a directory larger than its entries can fill is refused before it is read
    data = _plain([("m/a", b"abc")])
    end = len(data) - 22
    _refused(_patched(data, end + 12, struct.pack("<I", 2_000_000)), "central directory of")


def test_the_total_size_is_bounded_before_anything_inflates() -> None:
    with pytest.raises(ZipError, match="unpacks to 2,000"):
        read_directory(_plain([("m/a", b"x" * 1000), ("m/b", b"y" * 1000)]),
                       Limits(max_uncompressed=1500))


def test_the_layout_admits_only_the_formats_names(scripted: bytes) -> None:
    members = members_of(scripted)
    root = members[0][0].split("/")[0]
    assert read_layout(scripted)[:2] == ("torchscript", root)
    for extra, match in ((f"{root}/extra/notes.txt", "not a member"),
                         (f"{root}/bytecode.pkl", "not a member"),
                         ("other/data.pkl", "2 top-level names"),
                         ("top.txt", "2 top-level names")):
        with pytest.raises(ArchiveFormatError, match=match):
            read_layout(write_zip([*members, (extra, b"x")]))


def test_random_damage_raises_only_our_error(scripted: bytes) -> None:
    """300 truncations and bit flips of a real archive: each is read whole or refused with
    ZipError / ArchiveFormatError, never another exception."""
    rng = random.Random(25)
    accepted = 0
    for trial in range(300):
        data = bytearray(scripted)
        if trial % 3 == 0:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        try:
            read_members(bytes(data))
            read_layout(bytes(data))
            accepted += 1
        except (ZipError, ArchiveFormatError):
            pass
    assert accepted < 100  # most damage is caught (flips in unchecked bytes, e.g. timestamps,
    # pass: they change no member)
