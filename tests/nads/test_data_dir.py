"""The data dir of `nads serve` and `nads admin` is this user's alone (nads/data_dir.py): created
0700 with everything in it private, refused when another user owns it or can write it, tightened
when others can only read it. The suite runs as root: "another user" is the sandbox's user."""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from nads.data_dir import DataDirRefused, prepare_data_dir
from nads.local_key import LOCAL_KEY_FILE
from store.settings import get_settings

OTHER = "nads-sandbox"  # scripts/install.sh creates it; any uid but this process's would do

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@pytest.fixture(autouse=True)
def umask() -> Iterator[None]:
    """A user's usual umask (022) for each test, and this process's own back afterwards."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def other() -> pwd.struct_passwd:
    return pwd.getpwnam(OTHER)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_nads_admin_makes_a_private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """Through the commands' own start-up (`_settings`, as `nads serve` runs it), then the
    database and the local key it writes: nothing in the data dir is open to others."""
    from nads.service_commands import _local_key, _settings
    from store.migrate import upgrade

    data = tmp_path / "checkout" / "var"
    monkeypatch.setenv("NADS_DATA_DIR", str(data))
    for name in ("NADS_DATABASE_URL", "NADS_BROKER_URL", "NADS_BLOB_DIR"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    try:
        settings = _settings()
        upgrade(settings.resolved_database_url)
        _local_key(settings)
    finally:
        get_settings.cache_clear()
    assert (data / "nads.db").is_file() and (data / LOCAL_KEY_FILE).is_file()
    (data / "blobs" / "ab").mkdir(parents=True)  # as the blob store and the workers make them
    (data / "blobs" / "ab" / "abcd").write_bytes(b"a result")
    opened = {str(p.relative_to(tmp_path)): f"{mode(p):04o}"
              for p in [data.parent, data, *data.rglob("*")] if mode(p) & 0o077}
    assert not opened, opened


def test_a_data_dir_of_another_user_is_refused(tmp_path: Path, other: pwd.struct_passwd
                                               ) -> None:
    data = tmp_path / "var"
    data.mkdir(mode=0o755)
    os.chown(data, other.pw_uid, other.pw_gid)
    with pytest.raises(DataDirRefused) as refused:
        prepare_data_dir(data)
    assert f"{data} (the data dir) is owned by {OTHER} (uid {other.pw_uid})" in str(refused.value)
    assert "Use a folder of your own (--data-dir or NADS_DATA_DIR)" in str(refused.value)
    assert str(refused.value).startswith("NADS_DATA_DIR (--data-dir): ")


@pytest.mark.parametrize("where", ["broker", "broker/queue/1.msg", "above"])
def test_a_folder_or_file_of_another_user_in_or_above_the_data_dir_is_refused(
        tmp_path: Path, other: pwd.struct_passwd, where: str) -> None:
    """Another user's broker folder or message in this user's data dir (they could swap it),
    or a folder above the data dir (they could rename the data dir away and put theirs)."""
    data = tmp_path / "above" / "var"
    (data / "broker" / "queue").mkdir(parents=True)
    (data / "broker" / "queue" / "1.msg").write_text("{}")
    planted = tmp_path / where if where == "above" else data / where
    os.chown(planted, other.pw_uid, other.pw_gid)
    with pytest.raises(DataDirRefused, match=f"{planted} .* is owned by {OTHER}"):
        prepare_data_dir(data)


@pytest.mark.parametrize("link", ["var", "var/blobs"])
def test_a_symlink_on_the_way_or_in_the_data_dir_is_checked_where_it_points(
        tmp_path: Path, other: pwd.struct_passwd, link: str) -> None:
    """A data dir reached through a symlink, or a blob store that is a symlink (this user's
    own) to another user's folder."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, other.pw_uid, other.pw_gid)
    if link != "var":
        (tmp_path / "var").mkdir()
    (tmp_path / link).symlink_to(theirs)
    with pytest.raises(DataDirRefused, match=f"{theirs} .* is owned by {OTHER}"):
        prepare_data_dir(tmp_path / "var")


@pytest.mark.parametrize(("where", "bits"), [("var", 0o777), ("var", 0o775),
                                              ("var/blobs", 0o757), ("above", 0o777)])
def test_a_folder_others_can_write_is_refused_and_left_as_it_is(
        tmp_path: Path, other: pwd.struct_passwd, where: str, bits: int) -> None:
    """Writable by everyone, or by a group with another member (the sandbox user's group:
    its name is not root's); refused rather than tightened, since files may already be planted."""
    data = tmp_path / "above" / "var"
    (data / "blobs").mkdir(parents=True)
    folder = tmp_path / where if where == "above" else tmp_path / "above" / where
    os.chown(folder, 0, other.pw_gid)
    os.chmod(folder, bits)
    with pytest.raises(DataDirRefused) as refused:
        prepare_data_dir(data)
    assert f"{folder} (" in str(refused.value)
    assert "every user" in str(refused.value) if bits & 0o002 else f"group {OTHER}" in str(
        refused.value)
    assert f"chmod go-w {folder}" in str(refused.value)
    assert mode(folder) == bits


def test_a_sticky_folder_above_is_accepted(tmp_path: Path) -> None:
    """As /tmp: others write there, but cannot rename or remove this user's data dir."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    assert prepare_data_dir(shared / "var") == []
    assert mode(shared / "var") == 0o700


def test_a_data_dir_others_can_only_read_is_made_0700(tmp_path: Path) -> None:
    """0755 (what `nads serve` made under a umask of 022), or group-writable by the owner's
    private group (root's `root`, no other member: a umask of 002): tightened, said."""
    for name, bits in (("old", 0o755), ("private-group", 0o770)):
        data = tmp_path / name
        data.mkdir()
        data.chmod(bits)
        assert prepare_data_dir(data) == [
            f"NADS_DATA_DIR (--data-dir): {data} was mode {bits:04o} (others could read it); "
            "made 0700 (yours alone)"]
        assert mode(data) == 0o700


def test_what_an_earlier_serve_left_open_in_the_data_dir_is_made_private(tmp_path: Path
                                                                         ) -> None:
    """Files and folders made under a umask of 022, and so a hard link to one of them that
    another user made elsewhere while they could (where fs.protected_hardlinks is 0)."""
    data = tmp_path / "var"
    (data / "blobs" / "ab").mkdir(parents=True)
    (data / "nads.db").write_bytes(b"a database")
    (data / "blobs" / "ab" / "abcd").write_bytes(b"a result")
    data.chmod(0o700)
    elsewhere = tmp_path / "their-link"
    os.link(data / "nads.db", elsewhere)
    notes = prepare_data_dir(data)
    assert len(notes) == 1 and "4 files and folders in" in notes[0], notes
    assert {p.name: mode(p) for p in data.rglob("*")} == {
        "nads.db": 0o600, "blobs": 0o700, "ab": 0o700, "abcd": 0o600}
    assert mode(elsewhere) == 0o600


def test_the_commands_refuse_with_exit_2_and_the_reason(
        tmp_path: Path, other: pwd.struct_passwd, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from nads.service_commands import _settings

    data = tmp_path / "var"
    data.mkdir()
    os.chown(data, other.pw_uid, other.pw_gid)
    get_settings.cache_clear()
    monkeypatch.setenv("NADS_DATA_DIR", str(data))
    try:
        with pytest.raises(typer.Exit) as exited:
            _settings()
    finally:
        get_settings.cache_clear()
    assert exited.value.exit_code == 2
    assert capsys.readouterr().err.startswith(
        f"nads: NADS_DATA_DIR (--data-dir): {data} (the data dir) is owned by {OTHER}")


def _start(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """The commands' start-up (`_settings`) with these settings."""
    from nads.service_commands import _settings

    for name in ("NADS_DATABASE_URL", "NADS_BROKER_URL", "NADS_BLOB_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        _settings()
    finally:
        get_settings.cache_clear()


def test_a_blob_dir_outside_the_data_dir_is_held_to_the_same_rules(
        tmp_path: Path, other: pwd.struct_passwd, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """NADS_BLOB_DIR elsewhere holds users' results and uploads as the data dir does: another
    user's folder is refused, naming the setting; one of this user's that others can read is
    made private, with a line saying so; a refusal of either folder changes neither."""
    data, blobs = tmp_path / "var", tmp_path / "blobs"
    blobs.mkdir()
    os.chown(blobs, other.pw_uid, other.pw_gid)
    with pytest.raises(typer.Exit) as exited:
        _start(monkeypatch, NADS_DATA_DIR=str(data), NADS_BLOB_DIR=str(blobs))
    assert exited.value.exit_code == 2
    assert capsys.readouterr().err.startswith(
        f"nads: NADS_BLOB_DIR: {blobs} (the blob dir) is owned by {OTHER}")

    os.chown(blobs, 0, 0)
    (blobs / "ab").mkdir()
    (blobs / "ab" / "abcd").write_bytes(b"alice's upload")
    for path, bits in ((data, 0o755), (blobs / "ab", 0o777), (blobs / "ab" / "abcd", 0o644)):
        os.chmod(path, bits)  # the start-up above set this process's umask to 077
    with pytest.raises(typer.Exit):
        _start(monkeypatch, NADS_DATA_DIR=str(data), NADS_BLOB_DIR=str(blobs))
    assert capsys.readouterr().err.startswith(
        f"nads: NADS_BLOB_DIR: {blobs / 'ab'} (in the blob dir; mode 0777) is writable by "
        "every user")
    assert mode(data) == 0o755  # refused before anything was changed

    os.chmod(blobs / "ab", 0o755)
    _start(monkeypatch, NADS_DATA_DIR=str(data), NADS_BLOB_DIR=str(blobs))
    err = capsys.readouterr().err
    assert f"NADS_BLOB_DIR: 2 files and folders in {blobs} were open to others" in err, err
    assert f"NADS_DATA_DIR (--data-dir): {data} was mode 0755" in err, err
    assert (mode(data), mode(blobs), mode(blobs / "ab"), mode(blobs / "ab" / "abcd")) == \
        (0o700, 0o700, 0o700, 0o600)


def test_folders_inside_the_data_dir_are_checked_once_with_it(tmp_path: Path) -> None:
    from nads.data_dir import private_dirs
    from store.settings import Settings

    data = tmp_path / "var"
    inside = Settings(data_dir=data, blob_dir=data / "b", database_url=None)
    assert private_dirs(inside) == []
    outside = Settings(data_dir=data, blob_dir=tmp_path / "b",
                       database_url="postgresql+psycopg://x@127.0.0.1/db")
    assert private_dirs(outside) == [(tmp_path / "b", "NADS_BLOB_DIR", "the blob dir")]
