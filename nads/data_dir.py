"""The data dir of `nads serve` and `nads admin` (NADS_DATA_DIR, --data-dir; default ./var): this
user's alone.

It holds other users' results and uploaded models (blobs), the broker's messages (specs), the
database and the local key: nothing in it may be readable by other local users, and nothing in
it, nor a folder on the way to it, may be replaceable by them (a planted database, message or
blob would be served as this user's). The same holds for the blob dir where NADS_BLOB_DIR puts
it outside the data dir (`private_dirs`). Not for NADS_DATASETS_DIR (public datasets, which a
deployment may keep read-only in a folder of root's), nor for the folder of a SQLite database
that NADS_DATABASE_URL puts elsewhere (often a folder of other things, such as a checkout: its
files are not the service's to make private).
`prepare_data_dir` therefore

- sets the process umask to 077: whatever this process and the workers it starts create
  afterwards (database, blobs, messages, logs) is 0600 / 0700;
- creates the data dir 0700 when it is missing;
- refuses (DataDirRefused) a data dir that is not this user's, or a folder or file on the way to
  it or in it that is neither this user's nor root's, or a symlink that is neither; a folder on
  the way that others can write without the sticky bit (they could rename the data dir away and
  put their own in its place), or the data dir or a folder in it that others can write at all
  (they may already have put files there: tightening it would shut them in with this user's
  data). "Others" are any user but the owner: a group that is the owner's private group (its
  name is the user's and it has no other member: Debian's and Fedora's umask 002) does not count;
- tightens a data dir of this user's that others can only read or search (0755: what earlier
  versions made under a umask of 022) to 0700, and this user's files and folders in it that
  others could read to 0600 / 0700 (which also closes a hard link to one made elsewhere), and
  says so.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from store.settings import Settings

PRIVATE_UMASK = 0o077
FIELD = "NADS_DATA_DIR (--data-dir)"
DATA_DIR = "the data dir"
_MAX_LINKS = 40  # symlinks followed in one path (the kernel's own limit)


class DataDirRefused(Exception):
    """The data dir, or a path on the way to it or in it, could be changed by another user."""


PrivateDir = tuple[Path, str, str]  # a folder, the setting that names it, what it is


def prepare_data_dir(path: Path, others: Sequence[PrivateDir] = ()) -> list[str]:
    """Makes `path` the data dir as the module says (umask 077, created 0700, checked), and
    `others` folders of this user's alone like it (`private_dirs`); returns a line for each
    thing it tightened. DataDirRefused, before anything is changed, when another user could
    change any of them."""
    os.umask(PRIVATE_UMASK)
    checked = [_checked(path, FIELD, DATA_DIR, "--data-dir or NADS_DATA_DIR")]
    checked += [_checked(folder, field, what, field) for folder, field, what in others]
    return [note for folder in checked for note in folder.tighten()]


def private_dirs(settings: Settings) -> list[PrivateDir]:
    """The folders besides the data dir that hold users' data, where settings put them outside
    it."""
    data_dir = (Path.cwd() / settings.data_dir).resolve()
    dirs = [(settings.blob_dir, "NADS_BLOB_DIR", "the blob dir")]
    return [(path, field, what) for path, field, what in dirs
            if path is not None and not (Path.cwd() / path).resolve().is_relative_to(data_dir)]


@dataclass(frozen=True)
class _Checked:
    """A private folder that passed the checks, and what in it others could read."""

    field: str
    real: Path
    mode: int
    opened: list[tuple[str, int]]

    def tighten(self) -> list[str]:
        """Makes it and what in it others could read this user's alone; a line for each."""
        notes = []
        if self.mode & 0o077:
            os.chmod(self.real, 0o700)
            notes.append(f"{self.field}: {self.real} was mode {self.mode:04o} (others could "
                         "read it); made 0700 (yours alone)")
        for entry, mode in self.opened:  # also closes a hard link made elsewhere meanwhile
            with contextlib.suppress(FileNotFoundError):  # a broker message taken meanwhile
                os.chmod(entry, mode & 0o700)
        if self.opened:
            entry, mode = self.opened[0]
            notes.append(f"{self.field}: {len(self.opened)} files and folders in {self.real} "
                         f"were open to others (e.g. {entry}, mode {mode:04o}); made yours "
                         "alone")
        return notes


def _checked(path: Path, field: str, what: str, setting: str) -> _Checked:
    """Checks a folder of this user's alone (created 0700 when missing), changing nothing
    else: `field` names it in messages, `what` says what it is, `setting` how to name
    another."""
    absolute = Path.cwd() / path  # `..` left to the kernel's meaning, as mkdir sees it
    check = _Check(field, what, setting, absolute)
    check.way(absolute)  # what exists; mkdir makes the rest, 0700 under the umask
    absolute.mkdir(mode=0o700, parents=True, exist_ok=True)
    real = absolute.resolve()
    info = os.stat(real)
    if info.st_uid != os.geteuid():
        raise DataDirRefused(check.owner_problem(real, what, info, root_too=False))
    check.refuse_writable(real, what, info)
    return _Checked(field, real, stat.S_IMODE(info.st_mode), check.inside(real))


@dataclass(frozen=True)
class _Check:
    """The checks of one private folder `top`, their messages naming it by `field`, saying
    `what` it is and which `setting` names another."""

    field: str
    what: str
    setting: str
    top: Path

    def way(self, path: Path, links: int = 0) -> Path | None:
        """Checks each existing folder and symlink from / down to `path` (following symlinks,
        each checked where it lies, and its target's way); returns the real path, or None where
        a part of it does not exist (from there on, nothing to check)."""
        current = Path("/")
        for part in path.parts[1:]:
            if part == "..":  # `current` is a real path: its parent is the kernel's `..`
                current = current.parent
                continue
            candidate = current / part
            try:
                info = os.lstat(candidate)
            except (FileNotFoundError, NotADirectoryError):
                return None
            role = self.what if candidate == self.top else f"on the way to {self.top}"
            if info.st_uid not in (os.geteuid(), 0):
                raise DataDirRefused(self.owner_problem(candidate, role, info))
            if stat.S_ISLNK(info.st_mode):
                if links >= _MAX_LINKS:
                    raise DataDirRefused(f"{self.field}: {self.top}: too many symlinks on the "
                                         "way")
                target = os.readlink(candidate)
                followed = self.way(Path(os.path.join(current, target)), links + 1)
                if followed is None:
                    return None
                current = followed
                continue
            if stat.S_ISDIR(info.st_mode) and candidate != self.top \
                    and not info.st_mode & stat.S_ISVTX:
                self.refuse_writable(candidate, role, info)
            current = candidate
        return current

    def inside(self, top: Path) -> list[tuple[str, int]]:
        """Every entry under `top` is this user's or root's; no folder in it is writable by
        others; a symlink in it is checked all the way to its target. Returns this user's files
        and folders in it that others may read (path, mode)."""
        me = os.geteuid()
        role = f"in {self.what}"
        opened = []
        folders = [str(top)]
        while folders:
            folder = folders.pop()
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue  # removed meanwhile (a worker of another serve running)
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # a broker message taken meanwhile
                if info.st_uid != me and info.st_uid != 0:
                    raise DataDirRefused(self.owner_problem(Path(entry.path), role, info))
                if stat.S_ISLNK(info.st_mode):
                    self.way(Path(folder, os.readlink(entry.path)))
                    continue
                if stat.S_ISDIR(info.st_mode):
                    self.refuse_writable(Path(entry.path), role, info)
                    folders.append(entry.path)
                if info.st_mode & 0o077 and info.st_uid == me:
                    opened.append((entry.path, stat.S_IMODE(info.st_mode)))
        return opened

    def refuse_writable(self, path: Path, role: str, info: os.stat_result) -> None:
        writers = _other_writers(info)
        if writers:
            raise DataDirRefused(
                f"{self.field}: {path} ({role}; mode {stat.S_IMODE(info.st_mode):04o}) is "
                f"writable by {writers}: they could have put or swapped files there (database, "
                f"broker messages, blobs) that `nads serve` would take for yours. Check what is "
                f"in it, then `chmod go-w {path}`, or use a new folder ({self.setting})")

    def owner_problem(self, path: Path, role: str, info: os.stat_result,
                      root_too: bool = True) -> str:
        me = os.geteuid()
        wanted = f"not by you ({_user_name(me)})" + (" nor root" if root_too and me else "")
        return (f"{self.field}: {path} ({role}) is owned by {_user_name(info.st_uid)} (uid "
                f"{info.st_uid}), {wanted}: that user could put or swap files there "
                f"(database, broker messages, blobs) that `nads serve` would take for yours, or "
                f"read them. Use a folder of your own ({self.setting}), or check what is in it "
                f"and take it over (chown -R)")


def _other_writers(info: os.stat_result) -> str:
    """Who besides the owner can write a file of `info` ('' for no one)."""
    if info.st_mode & stat.S_IWOTH:
        return "every user"
    if info.st_mode & stat.S_IWGRP and not _private_group(info.st_gid, info.st_uid):
        return f"the group {_group_name(info.st_gid)}"
    return ""


def _private_group(gid: int, uid: int) -> bool:
    """True when group `gid` is user `uid`'s private group: the same name, no other member."""
    try:
        group, user = grp.getgrgid(gid), pwd.getpwuid(uid)
    except KeyError:
        return False
    return group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
