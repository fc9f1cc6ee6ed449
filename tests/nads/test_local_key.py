"""The key `nads serve` wrote is read for a local URL only (issue 27)."""

from __future__ import annotations

import http.server
import json
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from nads.client import Client, NadsError
from nads.local_key import (
    PROOF_PATH,
    check_proof,
    is_local,
    local_key,
    local_key_path,
    new_challenge,
    prove,
    read_key_file,
    write_key_file,
)


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


def _planted(path: Path, mode: int, owner: int | None = None) -> Path:
    path.write_text("nads_planted\n")
    path.chmod(mode)
    if owner is not None:
        os.chown(path, owner, -1)
    return path


@pytest.mark.parametrize("plant", [
    pytest.param(lambda path: _planted(path, 0o666), id="world-writable"),
    pytest.param(lambda path: _planted(path, 0o620), id="group-writable"),
    pytest.param(lambda path: _planted(path, 0o600, owner=65534), id="another-users",
                 marks=pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")),
    pytest.param(lambda path: path.symlink_to(_planted(path.with_name("elsewhere"), 0o600)),
                 id="symlink")])
def test_a_planted_key_file_is_not_read(tmp_path: Path, plant: Callable[[Path], object]
                                        ) -> None:
    """Another local user who can write to a shared ./var cannot make this user's client (or
    `nads serve`, which reuses the file) use the planter's key, so this user's uploads and jobs
    would go into the planter's account."""
    env = {"NADS_DATA_DIR": str(tmp_path)}
    plant(local_key_path(env))
    assert read_key_file(local_key_path(env)) is None
    assert local_key("http://127.0.0.1:8000", env) is None


def test_the_key_is_written_0600_through_a_new_file(tmp_path: Path) -> None:
    """A file or symlink planted at the key's name is replaced, never written through (the
    key would land in a file the planter reads, or clobber whatever the link names)."""
    target = tmp_path / "planters-file"
    target.write_text("")
    target.chmod(0o666)
    path = tmp_path / "local-api-key"
    path.symlink_to(target)
    write_key_file(path, "nads_secret")
    assert target.read_text() == ""
    assert not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path) == "nads_secret"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local-api-key", "planters-file"]


class _Impostor(http.server.BaseHTTPRequestHandler):
    """Another local program on the loopback port: answers everything, records the headers."""

    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).seen.append(dict(self.headers))
        body = json.dumps({"proof": "0" * 64} if self.path.startswith(PROOF_PATH) else [])
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


def test_the_local_key_goes_only_to_a_service_that_proves_it_holds_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever listens on a loopback port may be another user's program (the port of a
    `nads serve` that is down is free): it gets a challenge, cannot answer it, and never sees
    the key; the holder of the key answers it."""
    key = "nads_victims_key"
    write_key_file(tmp_path / "local-api-key", key)
    monkeypatch.setenv("NADS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("NADS_KEY", raising=False)
    _Impostor.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with Client(f"http://127.0.0.1:{server.server_port}") as client, \
                pytest.raises(NadsError) as refused:
            list(client.jobs())
    finally:
        server.shutdown()
    assert "did not prove" in str(refused.value), refused.value
    assert _Impostor.seen and all(key not in json.dumps(h) for h in _Impostor.seen)
    assert not any("Authorization" in h for h in _Impostor.seen), _Impostor.seen
    challenge = new_challenge()
    assert check_proof(key, challenge, prove(key, challenge))
    assert not check_proof(key, challenge, prove("another key", challenge))
    assert not check_proof(key, new_challenge(), prove(key, challenge))
