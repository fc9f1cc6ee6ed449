"""The client and CLI against a hostile server: a service (or whatever answers at NADS_URL)
names the artifacts `Client.download` and `nads download` write. A name that is a path
(`../x`, `/abs/x`, `a/b`, `..`) must not write outside the folder the user chose. The hostile
server is a real HTTP server (uvicorn) answering the routes the client calls."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, HTTPException, Response

from nads.client import Client, NadsError
from tests.support import NADS_BIN, ServerThread, clean_env

JOB_ID = "0123456789abcdef0123456789abcdef"
PAYLOAD = b"written by the server\n"


def _hostile_app(names: list[str]) -> FastAPI:
    app = FastAPI()

    def artifact(name: str) -> dict:
        return {"name": name, "size": len(PAYLOAD), "sha256": "0" * 64,
                "media_type": "application/octet-stream",
                "url": f"/v1/jobs/{JOB_ID}/artifacts/{name}"}

    @app.get("/v1/jobs/{job_id}")
    def job(job_id: str) -> dict:
        if job_id != JOB_ID:
            raise HTTPException(404, detail="job_id: none \x1b]52;c;cm0gLXJmIH4K\x07")
        return {"id": JOB_ID, "kind": "nads", "status": "succeeded",
                "progress": {"fraction": 1.0, "message": "done"}, "spec": {},
                "summary": None, "error": None, "artifacts": [artifact(n) for n in names]}

    @app.get("/{anything:path}")  # wherever the client's URL lands once `..` is resolved
    def content(anything: str) -> Response:
        return Response(PAYLOAD, media_type="application/octet-stream")

    return app


@pytest.fixture()
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """(the folder the user downloads into, the folder beside it nothing may reach)."""
    out, beside = tmp_path / "out", tmp_path / "beside"
    beside.mkdir()
    return out, beside


def _hostile_names(beside: Path) -> list[str]:
    return ["../beside/escaped.npy", str(beside / "absolute.npy")]


@pytest.fixture()
def hostile(layout: tuple[Path, Path]) -> Iterator[str]:
    with ServerThread(_hostile_app(_hostile_names(layout[1]))) as server:
        yield server.url


def test_client_download_writes_no_server_named_path_outside_the_folder(
    hostile: str, layout: tuple[Path, Path]
) -> None:
    out, beside = layout
    with Client(hostile, key="nads_k") as client, pytest.raises(NadsError) as raised:
        client.download(JOB_ID, out)
    assert "artifact name" in str(raised.value), raised.value
    assert list(beside.iterdir()) == []
    assert not out.exists() or list(out.rglob("*")) == []


def test_cli_download_writes_no_server_named_path_outside_the_folder(
    hostile: str, layout: tuple[Path, Path]
) -> None:
    out, beside = layout
    r = subprocess.run([NADS_BIN, "download", JOB_ID, "--out", str(out), "--url", hostile,
                        "--key", "nads_k"], capture_output=True, text=True, timeout=60,
                       env=clean_env())
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "artifact name" in r.stderr, r.stderr
    assert list(beside.iterdir()) == []


@pytest.mark.parametrize("name", ["..", ".", "a/b.npy", "a\\b.npy", "", "x\0.npy"])
def test_client_download_refuses_names_that_are_not_one_plain_file_name(
    tmp_path: Path, name: str
) -> None:
    with ServerThread(_hostile_app([name])) as server, \
            Client(server.url, key="nads_k") as client, pytest.raises(NadsError):
        client.download(JOB_ID, tmp_path / "out")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_client_download_still_writes_plain_names(tmp_path: Path) -> None:
    with ServerThread(_hostile_app(["nads.npy", "preview.png"])) as server, \
            Client(server.url, key="nads_k") as client:
        paths = client.download(JOB_ID, tmp_path / "out")
    assert paths == [tmp_path / "out" / "nads.npy", tmp_path / "out" / "preview.png"]
    assert all(p.read_bytes() == PAYLOAD for p in paths)


def _escaping_app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/jobs/{job_id}")
    def job(job_id: str) -> dict:
        if job_id != JOB_ID:
            raise HTTPException(404, detail="job_id: none \x1b]52;c;cm0gLXJmIH4K\x07")
        return {"id": JOB_ID, "kind": "nads", "status": "failed",
                "progress": {"fraction": 1.0, "message": "done\x1b]0;title set\x07\x1b[2J\rok"},
                "spec": {}, "summary": None, "error": "boom\x1b]52;c;cm0gLXJmIH4K\x07",
                "artifacts": []}

    return app


def test_cli_prints_no_terminal_escape_sequence_a_server_sends() -> None:
    """A hostile server's job message and error carry OSC (window title, OSC 52: the
    clipboard) and CSI (clear screen) sequences: `nads status` must not pass them to the
    terminal."""
    with ServerThread(_escaping_app()) as server:
        r = subprocess.run([NADS_BIN, "status", JOB_ID, "--url", server.url, "--key", "nads_k"],
                           capture_output=True, timeout=60, env=clean_env())
        failing = subprocess.run([NADS_BIN, "status", "f" * 32, "--url", server.url,
                                  "--key", "nads_k"], capture_output=True, timeout=60,
                                 env=clean_env())  # an error's detail, on stderr
    assert r.returncode == 0, r.stderr
    assert b"\x1b" not in r.stdout and b"\x07" not in r.stdout, r.stdout
    assert b"title set\\x07\\x1b[2J\\x0dok" in r.stdout, r.stdout  # shown, escaped
    assert b"\r" not in r.stdout, r.stdout  # "ok" cannot overwrite the line
    assert failing.returncode != 0 and b"none \\x1b]52" in failing.stderr, failing.stderr
    assert b"\x1b" not in failing.stderr and b"\x07" not in failing.stderr, failing.stderr
