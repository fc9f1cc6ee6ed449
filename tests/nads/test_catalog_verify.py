"""`nads catalog verify` (nads/catalog_command.py) on copies of the shipped entries: an intact
entry is `ok` and exits 0; a corrupted one (a flipped byte, a missing file) is reported `FAILED`
naming the file and the command exits 1, also when an intact entry is verified after it (a
script or CI reads the exit status, not the lines). A corrupted file is caught by its sha256,
before any recomputation: seconds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nads.catalog_export import verify
from nads.cli import build_app
from store.settings import SHIPPED_CATALOG_DIR


def _copy(root: Path, name: str = "logreg") -> Path:
    return Path(shutil.copytree(SHIPPED_CATALOG_DIR / name, root / name))


def _verify(root: Path, *names: str) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), ["catalog", "verify", *names, "--data", str(root)])
    return result.exit_code, result.output


def test_an_intact_entry_is_ok(tmp_path: Path) -> None:
    _copy(tmp_path)
    code, output = _verify(tmp_path)
    assert code == 0, output
    assert output.startswith("logreg: ok:"), output


def test_a_flipped_byte_is_failed_and_exits_1_before_an_intact_entry(tmp_path: Path) -> None:
    nads = _copy(tmp_path, "lenet") / "nads.npy"
    data = bytearray(nads.read_bytes())
    data[-1] ^= 0x01
    nads.write_bytes(bytes(data))
    _copy(tmp_path)  # logreg, intact, verified second: the failure must stay
    code, output = _verify(tmp_path, "lenet", "logreg")
    assert code == 1, output
    lines = output.splitlines()
    assert lines[0].startswith("lenet: FAILED:") and "nads.npy" in lines[0], output
    assert lines[1].startswith("logreg: ok:"), output


def test_a_missing_file_is_failed_and_exits_1(tmp_path: Path) -> None:
    (_copy(tmp_path) / "eval_point.npy").unlink()
    code, output = _verify(tmp_path)
    assert code == 1, output
    assert output.startswith("logreg: FAILED:") and "eval_point.npy" in output, output


def test_networks_recomputes_only_the_first_check_networks(tmp_path: Path) -> None:
    """`--networks 1`: network 0 alone (the quick check of a large entry); 0 is refused, by
    the command and by `verify` itself."""
    folder = _copy(tmp_path)
    with pytest.raises(ValueError, match="^networks: at least 1"):
        verify(folder, networks=0)
    code, output = _verify(tmp_path, "--networks", "1")
    assert code == 0, output
    assert output.startswith("logreg: ok: 1 networks recomputed"), output
    code, output = _verify(tmp_path)
    assert output.startswith("logreg: ok: 4 networks recomputed"), output
    code, output = _verify(tmp_path, "--networks", "0")
    assert code == 2 and "networks" in output, output
