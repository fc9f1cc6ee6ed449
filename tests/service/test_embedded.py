"""The embedded default (`nads serve`: SQLite, kombu's filesystem broker, a supervised worker)
and `nads admin create-key`, as the user runs them: subprocesses talking HTTP."""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from store.settings import Settings
from tests.support import (
    NADS_BIN,
    ROOT,
    clean_env,
    in_process,
    keyed_client,
    nads_serve,
    settings_env,
    wait_for_job,
)

SPEC = {"architecture": "logreg", "input_shape": [1, 8, 8], "num_networks": 30, "seed": 4,
        "shards": 2}


@pytest.mark.slow
def test_nads_serve_runs_a_job_end_to_end_with_no_server(tmp_path: Path) -> None:
    """At the default settings. Meanwhile a slowloris client trickles headers that never end:
    `nads serve` serves with api.serving's request-header deadline, so it gets a 408 at the
    default NADS_HEADER_TIMEOUT_S (15 s), not a connection held for as long as it trickles."""
    with nads_serve(tmp_path, clean_env()) as serve, \
            socket.create_connection(("127.0.0.1", int(serve.url.rsplit(":", 1)[1])),
                                     timeout=30) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never end
        opened = time.monotonic()
        answered: list[tuple[bytes, float]] = []
        reader = threading.Thread(target=lambda: answered.append(
            (slow.recv(1000), time.monotonic() - opened)), daemon=True)
        reader.start()
        assert serve.url in serve.banner
        data = tmp_path / "var"
        assert (data / "nads.db").is_file() and (data / "broker" / "queue").is_dir()
        with keyed_client(serve.url, serve.key) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.text
            r = client.post("/v1/jobs/nads", json=SPEC)
            assert r.status_code == 202, r.text
            job = wait_for_job(client, r.json()["id"], timeout=150)
            assert job["status"] == "succeeded", (job, (data / "worker.log").read_text()[-3000:])
            nads = client.get(f"/v1/jobs/{job['id']}/artifacts/nads.npy")
            assert nads.status_code == 200
            expected = in_process(SPEC)["nads"]
            np.testing.assert_array_equal(np.load(io.BytesIO(nads.content)), expected)
        blob = next((data / "blobs").glob(f"*/{job['artifacts'][0]['sha256']}"))
        assert blob.stat().st_size == job["artifacts"][0]["size"]
        # the API's and the workers' files (database, blobs, messages, logs) are the user's
        # alone: `nads serve` runs them under a umask of 077 (nads/data_dir.py)
        readable_by_others = {}
        for path in [data, *data.rglob("*")]:
            with contextlib.suppress(FileNotFoundError):  # a message taken meanwhile
                if path.lstat().st_mode & 0o077:
                    readable_by_others[str(path)] = oct(path.lstat().st_mode)
        assert not readable_by_others, readable_by_others
        worker_pids = [p.pid for p in psutil.Process(serve.proc.pid).children(recursive=True)]
        assert worker_pids, "no supervised worker process"
        reader.join(timeout=30)
    assert answered, "no answer to the unfinished headers within 30 s"
    answer, waited = answered[0]
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"NADS_HEADER_TIMEOUT_S" in answer
    assert 14.5 < waited < 17.5, waited
    assert serve.proc.returncode == 0
    time.sleep(0.5)
    assert not [p for p in worker_pids if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE], "worker left running"


def test_admin_create_key_prints_a_working_key_last(settings: Settings, api_url: str) -> None:
    out = subprocess.run([NADS_BIN, "admin", "create-key", "--name", "carol"], cwd=ROOT,
                         env=settings_env(settings), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    key = out.stdout.split()[-1]
    assert key.startswith("nads_") and "carol" in out.stdout
    r = httpx.get(api_url + "/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.json()["items"] == []
