"""Bad input and limits: oversize bodies and uploads refused early (413 naming the limit), path
traversal in artifact, upload, catalog and architecture names, absurd specs refused naming the
field and the limit, and the per-user rate limit of job submission (429 + Retry-After), shared
by several API processes through the database.

The apps built here with their own settings get their own throwaway database and send their
messages to the session's real Redis broker, as every API does: a worker that takes one finds no
such job in its database and drops it (worker/tasks.py `_claim`), so their jobs are never
computed. Limits below the defaults keep the payloads small; each has a twin at the default in
tests/api/test_limit_defaults.py.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.main import create_app
from jobs.architecture_costs import keep_count
from nadcore.networks.counting import count_layers
from store.db import session_scope
from store.migrate import upgrade
from store.models import Worker, utcnow
from store.settings import Settings
from tests.fixtures import ThrowawayDatabases
from tests.support import ServerThread, keyed_client, new_key, submit_at_once

TINY = {"architecture": "logreg", "input_shape": [1, 4, 4], "num_networks": 8}


@pytest.fixture(scope="module")
def limited(databases: ThrowawayDatabases, broker_url: str,
            tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Small limits, a database of its own, the session's Redis broker."""
    url = databases.create()
    upgrade(url)
    data = tmp_path_factory.mktemp("limits")
    return Settings(data_dir=data, database_url=url, broker_url=broker_url,
                    blob_dir=data / "blobs", max_body_bytes=64 * 1024,
                    max_upload_bytes=100_000, submit_rate_per_minute=3)


@pytest.fixture(scope="module")
def server(limited: Settings) -> Iterator[str]:
    with ServerThread(create_app(limited)) as s:
        yield s.url


def _client(settings: Settings, url: str, user: str | None = None) -> httpx.Client:
    key = new_key(settings, user or f"u-{uuid.uuid4().hex[:8]}")
    return keyed_client(url, key)


# Oversize bodies --------------------------------------------------------------------------------

def test_an_oversize_json_body_is_413_naming_the_limit(limited: Settings, server: str) -> None:
    body = {**TINY, "eval_point": [0.5] * 40_000}  # ~200 kB of JSON
    with _client(limited, server) as c:
        r = c.post("/v1/jobs/nads", json=body)
        assert r.status_code == 413, r.text
        assert "65,536 bytes" in r.json()["detail"] and "NADS_MAX_BODY_BYTES" in r.json()["detail"]
        # Chunked (no Content-Length): refused once the limit is passed, not after the end.
        sent = 0

        def chunks() -> Iterator[bytes]:
            nonlocal sent
            for _ in range(10_000):
                sent += 8192
                yield b" " * 8192
        r = c.post("/v1/jobs/nads", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "NADS_MAX_BODY_BYTES" in r.text
        assert sent < 10_000 * 8192  # the generator was not drained: refused early
        # Under the limit, the same route works.
        assert c.post("/v1/jobs/nads", json=TINY).status_code == 202


@pytest.mark.parametrize("encoding", [b"gzip, chunked", b"identity, chunked",
                                      b"chunked, chunked"])
def test_a_body_chunked_under_another_spelling_is_413_too(limited: Settings, server: str,
                                                          encoding: bytes) -> None:
    """httptools reads a body as chunked whenever `chunked` is the last transfer coding
    (`gzip, chunked`); the limit must not pass such a body unread to the route, which reads it
    whole into memory before anything checks the caller (400 MiB grew the API by 1 GB)."""
    host, port = server.removeprefix("http://").split(":")
    chunk = b"%x\r\n" % 8192 + b" " * 8192 + b"\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/jobs/nads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nTransfer-Encoding: " + encoding + b"\r\n\r\n")
        try:  # 1 MiB of blanks, 16 times the limit; refused before its end is fine
            for _ in range(128):
                s.sendall(chunk)
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        answer = b""
        while b"\r\n\r\n" not in answer:
            try:
                data = s.recv(4096)
            except OSError:
                break
            if not data:
                break
            answer += data
    status_line = answer.split(b"\r\n", 1)[0]
    # 413 naming the limit, or the server's 400 for a coding it does not read; never the
    # route's answer to a body it read whole
    assert status_line.split(b" ")[1:2] in ([b"413"], [b"400"]), answer[:300]


def test_an_oversize_upload_is_413_and_leaves_nothing(limited: Settings, server: str) -> None:
    tmp = limited.resolved_blob_dir / "tmp"
    with _client(limited, server) as c:
        buf = io.BytesIO()
        np.save(buf, np.zeros((300, 100), np.float32))  # 120 kB > 100,000
        r = c.post("/v1/uploads", data={"kind": "nads"}, files={"file": ("n.npy", buf.getvalue())})
        assert r.status_code == 413, r.text
        assert "100,000 bytes" in r.text and "NADS_MAX_UPLOAD_BYTES" in r.text
    assert not tmp.exists() or list(tmp.iterdir()) == []


# Path traversal --------------------------------------------------------------------------------

TRAVERSALS = ["..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
              "..%5C..%5Cwindows", "%2Fetc%2Fpasswd", "....%2F%2F....%2F%2Fetc%2Fpasswd",
              "nads.npy%00.png", "%2e%2e"]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_traversal_in_artifact_and_catalog_names_is_404(limited: Settings, server: str,
                                                        name: str) -> None:
    with _client(limited, server) as c:
        job = c.post("/v1/jobs/nads", json=TINY)
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        for url in (f"{server}/v1/jobs/{job_id}/artifacts/{name}",
                    f"{server}/v1/catalog/{name}/nads.npy", f"{server}/v1/catalog/logreg/{name}",
                    f"{server}/v1/uploads/{name}"):
            r = c.send(c.build_request("GET", httpx.URL(url)))
            assert r.status_code in (404, 422), (url, r.status_code, r.text)
            assert "root:" not in r.text


def test_traversal_in_upload_and_architecture_filenames_stays_in_the_store(
    limited: Settings, server: str
) -> None:
    with _client(limited, server) as c:
        buf = io.BytesIO()
        np.save(buf, np.eye(2, 16, dtype=np.float32))
        r = c.post("/v1/uploads", data={"kind": "nads"},
                   files={"file": ("../../../../tmp/escaped.npy", buf.getvalue())})
        assert r.status_code == 201, r.text
        assert r.json()["filename"] == "escaped.npy"
        archive = io.BytesIO()  # laid out as TorchScript (the members it needs); never loaded
        with zipfile.ZipFile(archive, "w") as z:
            for member in ("code/__torch__.py", "data.pkl", "constants.pkl", "version"):
                z.writestr(f"evil/{member}", "")
        archive = archive.getvalue()
        r = c.post("/v1/architectures", data={"name": "../../../tmp/evil",
                                              "input_shape": "1,4,4"},
                   files={"file": ("evil.pt", archive)})
        assert r.status_code == 422 and "name" in r.text, r.text
        r = c.post("/v1/architectures", data={"name": "evil", "input_shape": "1,4,4"},
                   files={"file": ("..\\..\\..\\tmp\\evil.pt", archive)})
        assert r.status_code == 201, r.text
        assert r.json()["filename"] == "evil.pt"
    assert not Path("/tmp/escaped.npy").exists() and not Path("/tmp/evil.pt").exists()
    stored = [p for p in limited.resolved_blob_dir.rglob("*") if p.is_file()]
    assert all(p.parent.parent == limited.resolved_blob_dir for p in stored), stored


# Absurd specs ------------------------------------------------------------------------------------

ABSURD = [
    ("/v1/jobs/nads", {**TINY, "num_networks": 10**9}, "num_networks", "10000000"),
    ("/v1/jobs/nads", {**TINY, "input_shape": [1, 100_000, 100_000]}, "input_shape", "512"),
    ("/v1/jobs/nads", {**TINY, "num_networks": -5}, "num_networks", "2"),
    ("/v1/jobs/nads", {**TINY, "input_shape": [-1, 4, 4]}, "input_shape", "1"),
    ("/v1/jobs/nads", {**TINY, "shards": -3}, "shards", "1"),
    ("/v1/jobs/nads", {**TINY, "shards": 10**6}, "shards", "4096"),
    ("/v1/jobs/nads", {**TINY, "k": 0}, "k", "1"),
    # Within every field's range, far over the quota: refused naming the estimate and limit.
    ("/v1/jobs/nads", {**TINY, "input_shape": [16, 512, 512]}, "input_shape", "786432"),
    ("/v1/jobs/nads", {"architecture": "lenet", "input_shape": [1, 512, 512],
                       "num_networks": 10_000_000}, "quota", "NADS_MAX_FORWARD_PASSES"),
    ("/v1/jobs/probe", {"architecture": "logreg", "input_shape": [1, 8, 8],
                        "directions": {"kind": "random", "count": 10**6, "seed": 0}},
     "directions", "4096"),
    ("/v1/jobs/probe", {"architecture": "logreg", "input_shape": [1, 8, 8],
                        "directions": {"kind": "random", "count": 4, "seed": 0},
                        "data": {"num_train": 10**9}}, "data.num_train", "1000000"),
    ("/v1/jobs/poison", {"architecture": "lenet", "dataset": {"name": "digits"},
                         "nads": {"job": "x"}, "indices": [0], "training": {"epochs": -1}},
     "training.epochs", "1"),
]


@pytest.mark.parametrize(("route", "body", "field", "limit"), ABSURD,
                         ids=[f"{a[2]}={i}" for i, a in enumerate(ABSURD)])
def test_absurd_specs_are_refused_naming_the_field_and_the_limit(
    limited: Settings, server: str, route: str, body: dict, field: str, limit: str
) -> None:
    with _client(limited, server) as c:
        r = c.post(route, json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    if field == "quota":
        assert "exceeds the quota" in detail["msg"] and limit in detail["msg"], detail
        return
    msgs = [d["msg"] for d in detail]
    # The message starts with the field (or an element of it: "input_shape.1: ...").
    assert any(m.startswith((f"{field}:", f"{field}.")) and limit in m for m in msgs), msgs


# Rate limit --------------------------------------------------------------------------------------

def test_submissions_past_the_rate_are_429_with_retry_after(limited: Settings, server: str
                                                            ) -> None:
    user = f"rated-{uuid.uuid4().hex[:6]}"
    with _client(limited, server, user) as c, _client(limited, server) as other, \
            _client(limited, server, user) as second_key:
        for seed in range(3):
            assert c.post("/v1/jobs/nads", json={**TINY, "seed": seed}).status_code == 202
        r = c.post("/v1/jobs/nads", json=TINY)
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert "3 per minute" in r.json()["detail"]
        assert "NADS_SUBMIT_RATE_PER_MINUTE" in r.json()["detail"]
        # Probe and poison submissions draw on the same budget; reads are not limited.
        assert c.post("/v1/jobs/probe", json={}).status_code == 429
        assert c.get("/v1/jobs").status_code == 200
        # The budget is the key's: another user's key, and another key of the same user (made
        # by an administrator), each have their own.
        assert other.post("/v1/jobs/nads", json=TINY).status_code == 202
        assert second_key.post("/v1/jobs/nads", json=TINY).status_code == 202
        assert "with this key" in c.post("/v1/jobs/nads", json=TINY).json()["detail"]


def test_the_rate_is_shared_by_api_processes_and_holds_under_concurrency(
    limited: Settings, server: str
) -> None:
    """Two servers (as two API processes would) on one database; 8 concurrent submissions with
    one key against a limit of 3: exactly 3 accepted."""
    user = f"burst-{uuid.uuid4().hex[:6]}"
    key = new_key(limited, user)
    with ServerThread(create_app(limited)) as second:
        codes = submit_at_once([server, second.url] * 4, key, TINY, timeout=60)
    assert sorted(codes) == [202] * 3 + [429] * 5, codes


def test_the_rate_holds_for_submissions_that_wait_for_a_count(limited: Settings, server: str
                                                               ) -> None:
    """Six concurrent submissions with one key of a torchvision model at a shape not counted
    yet, against a limit of 3: each waits for the count (api/architecture_counts.py), which
    ended the transaction holding the key's lock, so without the second check all six were
    stored. The count is kept here as the lane's worker keeps it (the same functions)."""
    shape = [3, 29, 29]  # counted by no other test
    with session_scope(limited.resolved_database_url) as session:  # a lane that counts
        session.add(Worker(name=f"lane-{uuid.uuid4().hex[:6]}", hostname="h", pid=1,
                           processes=1, queues="validate", last_seen=utcnow()))
    headers = {"Authorization": f"Bearer {new_key(limited, f'wait-{uuid.uuid4().hex[:6]}')}"}
    spec = {"architecture": "torchvision:resnet18", "input_shape": shape, "num_networks": 2,
            "method": "autograd"}
    codes: list[int] = []

    def submit(seed: int) -> None:
        r = httpx.post(server + "/v1/jobs/nads", json={**spec, "seed": seed}, headers=headers,
                       params={"accept_long": "true"}, timeout=120)
        codes.append(r.status_code)

    threads = [threading.Thread(target=submit, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    time.sleep(5)  # every submission is past the first check and waits for the count
    count = count_layers("torchvision:resnet18", tuple(shape), 1)
    with session_scope(limited.resolved_database_url) as session:
        keep_count(session, "torchvision:resnet18", shape, 1, count, None)
    for t in threads:
        t.join()
    assert sorted(codes) == [202] * 3 + [429] * 3, codes


def test_counts_asked_for_draw_on_the_upload_rate(limited: Settings) -> None:
    """A submission of a torchvision model at a shape not counted yet queues a count on the
    validation lane, outside its fair dispatch, and may store nothing (here a 503: the count is
    not waited for), so the submission rate never saw it: one key could queue counts without
    bound ahead of every user's validations. Each count asked for is one of the key's
    NADS_UPLOAD_RATE_PER_MINUTE (here 2): the third is 429 before anything is queued."""
    settings = limited.model_copy(update={"upload_rate_per_minute": 2,
                                          "architecture_count_wait_s": 0.0})
    with session_scope(settings.resolved_database_url) as session:  # a lane that counts
        session.add(Worker(name=f"lane-{uuid.uuid4().hex[:6]}", hostname="h", pid=1,
                           processes=1, queues="validate", last_seen=utcnow()))
    with ServerThread(create_app(settings)) as server, \
            _client(settings, server.url) as c, _client(settings, server.url) as other:
        codes = [c.post("/v1/jobs/nads", json={"architecture": "torchvision:resnet18",
                                               "input_shape": [3, side, side],
                                               "num_networks": 2}).status_code
                 for side in (41, 42, 43)]  # counted by no other test
        assert codes == [503, 503, 429], codes
        r = c.post("/v1/jobs/nads", json={"architecture": "torchvision:resnet18",
                                          "input_shape": [3, 44, 44], "num_networks": 2})
        assert r.status_code == 429 and "NADS_UPLOAD_RATE_PER_MINUTE" in r.json()["detail"]
        assert "torchvision counts" in r.json()["detail"], r.text
        assert c.post("/v1/jobs/nads", json=TINY).status_code == 202  # no count: not limited
        assert other.post("/v1/jobs/nads", json={"architecture": "torchvision:resnet18",
                                                 "input_shape": [3, 45, 45],
                                                 "num_networks": 2}).status_code == 503


def test_the_rate_limit_is_a_setting() -> None:
    os.environ["NADS_SUBMIT_RATE_PER_MINUTE"] = "7"
    try:
        assert Settings().submit_rate_per_minute == 7
    finally:
        del os.environ["NADS_SUBMIT_RATE_PER_MINUTE"]
    assert Settings().submit_rate_per_minute == 60
