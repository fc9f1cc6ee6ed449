"""The key `nads serve` wrote is read for a local URL only (issue 27)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nads.client import Client
from nads.local_key import is_local, local_key, local_key_path


@pytest.mark.parametrize(("url", "local"), [
    ("http://127.0.0.1:8000", True), ("http://localhost:8080/", True), ("http://[::1]:80", True),
    ("https://127.0.0.2", True), ("http://nads.example.org", False), ("http://10.0.0.1", False),
    ("http://127.0.0.1.example.org", False), ("http://localhost.example.org", False),
    ("ftp://127.0.0.1", False), ("127.0.0.1:8000", False), ("", False)])
def test_is_local(url: str, local: bool) -> None:
    assert is_local(url) is local


def test_the_local_key_for_a_local_url_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    env = {"NADS_DATA_DIR": str(tmp_path)}
    local_key_path(env).write_text("nads_local\n")
    assert local_key_path(env) == tmp_path / "local-api-key"
    assert local_key("http://127.0.0.1:8000", env) == "nads_local"
    assert local_key("http://nads.example.org", env) is None
    assert local_key("http://127.0.0.1:8000", {"NADS_DATA_DIR": str(tmp_path / "none")}) is None
    monkeypatch.delenv("NADS_KEY", raising=False)
    monkeypatch.delenv("NADS_URL", raising=False)
    monkeypatch.setenv("NADS_DATA_DIR", str(tmp_path))
    assert Client("http://127.0.0.1:8000").key == "nads_local"
    assert Client("http://nads.example.org").key is None  # never leaves the machine
    assert Client("http://127.0.0.1:8000", key="given").key == "given"
    monkeypatch.setenv("NADS_KEY", "from_env")
    assert Client("http://127.0.0.1:8000").key == "from_env"
    monkeypatch.chdir(tmp_path)  # no NADS_DATA_DIR: ./var, as `nads serve`
    monkeypatch.delenv("NADS_KEY")
    monkeypatch.delenv("NADS_DATA_DIR")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "local-api-key").write_text("nads_var\n")
    assert Client().key == "nads_var"
