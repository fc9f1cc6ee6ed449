"""NAD jobs end to end: HTTP -> Postgres -> Redis -> a real Celery worker -> blobs -> HTTP.

The downloaded arrays must equal `nadcore.run_spec` on the same spec, in this process.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import time

import httpx
import numpy as np
import psutil
import pytest
from sqlalchemy import select

from api.main import create_app
from jobs.broker import make_celery
from nadcore import PartialNADs, run_spec
from nadcore.nads.spec import NADSpec
from store.blobs import BlobStore
from store.db import session_scope
from store.models import Job, Shard
from store.settings import Settings
from tests.support import (
    METRICS_AUTH,
    ServerThread,
    assert_matches_reference,
    failing_poison,
    in_process,
    lose_shard,
    reference,
    wait_for_job,
)
from worker.reconcile import reconcile_once

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("worker")]

LOGREG = {"architecture": "logreg", "input_shape": [1, 8, 8], "num_networks": 40, "seed": 3,
          "shards": 3}
LENET = {"architecture": "lenet", "input_shape": [1, 16, 16], "num_networks": 24, "seed": 5,
         "shards": 2}
ARRAYS = ("nads", "eigenvalues", "eval_point")


def download(client: httpx.Client, job: dict, name: str) -> np.ndarray:
    r = client.get(f"/v1/jobs/{job['id']}/artifacts/{name}")
    assert r.status_code == 200, r.text
    meta = next(a for a in job["artifacts"] if a["name"] == name)
    assert int(r.headers["content-length"]) == meta["size"] == len(r.content)
    assert hashlib.sha256(r.content).hexdigest() == meta["sha256"]
    return np.load(io.BytesIO(r.content))


def assert_matches_in_process(client: httpx.Client, job: dict, body: dict,
                              independent: bool = True) -> None:
    """The job's arrays are the library's in this process, bit for bit (sharding, the broker
    and the blob store change nothing), and, when `independent`, agree with the paper's loop
    computed without the engine (support.reference), so that a wrong engine cannot pass by
    agreeing with itself."""
    expected = in_process(body)
    assert sorted(a["name"] for a in job["artifacts"]) == sorted(
        [f"{n}.npy" for n in ARRAYS] + ["preview.png", "spectrum.png"])  # + figures (web page)
    got = {name: download(client, job, f"{name}.npy") for name in ARRAYS}
    for name in ARRAYS:
        assert got[name].dtype == expected[name].dtype
        assert got[name].shape == expected[name].shape
        np.testing.assert_array_equal(got[name], expected[name])
    if independent:
        assert_matches_reference(got, reference(body))


@pytest.fixture(scope="module")
def finished(alice: httpx.Client) -> dict[str, dict]:
    """A LogReg and a LeNet job, submitted together and run by the worker."""
    ids = {}
    for name, body in (("logreg", LOGREG), ("lenet", LENET)):
        r = alice.post("/v1/jobs/nads", json=body)
        assert r.status_code == 202, r.text
        # "running" when a worker took a shard before the 202 was written (fair dispatch
        # sends the shards in the submitting request)
        assert r.json()["status"] in ("queued", "running"), r.json()
        assert len(r.json()["shards"]) == body["shards"]
        ids[name] = r.json()["id"]
    return {name: wait_for_job(alice, job_id, timeout=120) for name, job_id in ids.items()}


@pytest.mark.parametrize(("name", "body"), [("logreg", LOGREG), ("lenet", LENET)])
def test_sharded_job_equals_run_spec_in_process(alice: httpx.Client, finished: dict,
                                                name: str, body: dict) -> None:
    job = finished[name]
    assert job["status"] == "succeeded", job["error"]
    assert job["mode"] == "sharded"
    # Finished: no time left to estimate (eta_s is for a queued or running job)
    assert job["progress"] == {"fraction": 1.0, "message": "succeeded", "eta_s": None}
    assert [s["status"] for s in job["shards"]] == ["succeeded"] * body["shards"]
    assert [(s["start"], s["stop"]) for s in job["shards"]] == [
        tuple(r) for r in NADSpec.model_validate(body).shard_ranges()]
    assert job["timings"]["run_s"] is not None and job["timings"]["run_s"] >= 0
    summary = job["summary"]
    assert summary["method"] == "finite_difference" and summary["num_networks"] == body[
        "num_networks"]
    assert len(summary["eigenvalues_head"]) > 0 and "stability" in summary
    assert_matches_in_process(alice, job, body)


def test_artifact_etag_304_range_206_and_416(alice: httpx.Client, finished: dict) -> None:
    job = finished["logreg"]
    meta = next(a for a in job["artifacts"] if a["name"] == "nads.npy")
    url = meta["url"]
    full = alice.get(url)
    assert full.headers["etag"] == f'"{meta["sha256"]}"'
    assert full.headers["accept-ranges"] == "bytes"
    r = alice.get(url, headers={"If-None-Match": f'"{meta["sha256"]}"'})
    assert r.status_code == 304 and r.content == b""
    assert r.headers["etag"] == f'"{meta["sha256"]}"'
    assert alice.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    r = alice.get(url, headers={"Range": "bytes=10-29"})
    assert r.status_code == 206
    assert r.content == full.content[10:30]
    assert r.headers["content-range"] == f"bytes 10-29/{meta['size']}"
    assert r.headers["content-length"] == "20"
    r = alice.get(url, headers={"Range": "bytes=-16"})
    assert r.status_code == 206 and r.content == full.content[-16:]
    r = alice.get(url, headers={"Range": f"bytes={meta['size'] + 5}-"})
    assert r.status_code == 416
    head = alice.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(meta["size"])
    r = alice.get(f"/v1/jobs/{job['id']}/artifacts/weights.pt")
    assert r.status_code == 404 and "nads.npy" in r.json()["detail"]


def test_early_stopping_runs_as_one_sequential_task(alice: httpx.Client) -> None:
    body = {"architecture": "logreg", "input_shape": [1, 8, 8], "num_networks": 60, "seed": 2,
            "target_stability": 0.5, "stability_k": 1, "check_every": 20}
    r = alice.post("/v1/jobs/nads", json=body)
    assert r.status_code == 202 and r.json()["mode"] == "sequential"
    job = wait_for_job(alice, r.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    expected = run_spec(NADSpec.model_validate(body))
    assert job["summary"]["num_networks"] == expected.summary()["num_networks"]
    assert_matches_in_process(alice, job, body)


def test_a_failing_job_reports_its_error(alice: httpx.Client) -> None:
    """A job only the worker finds wrong (the API refuses what it can see before anything is
    queued, a torchvision model that cannot take the shape included: test_estimates.py)."""
    r = alice.post("/v1/jobs/poison", json=failing_poison(alice))
    assert r.status_code == 202, r.text
    job = wait_for_job(alice, r.json()["id"])
    assert job["status"] == "failed"
    assert job["error"].startswith("shard 0: ValueError: nads: NAD rows have 4 values but the "
                                   "images have H*W = 1024 pixels per channel"), job["error"]
    assert "failed" in [s["status"] for s in job["shards"]]
    assert job["artifacts"] == [] and job["progress"]["message"] == "failed"


def _shard_rows(settings: Settings, job_id: str) -> list[Shard]:
    with session_scope(settings.resolved_database_url) as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        return list(job.shards)


def test_cancel_stops_running_work(alice: httpx.Client, settings: Settings) -> None:
    body = {"architecture": "lenet", "input_shape": [1, 16, 16], "num_networks": 8000,
            "seed": 9, "shards": 2}
    job = alice.post("/v1/jobs/nads", json=body).json()
    deadline = time.monotonic() + 60
    while True:  # wait until a shard is really computing
        current = alice.get(f"/v1/jobs/{job['id']}").json()
        if current["status"] == "running" and any(s["fraction"] > 0 for s in current["shards"]):
            break
        assert time.monotonic() < deadline, current
        time.sleep(0.1)
    assert 0 < current["progress"]["fraction"] < 1
    assert current["progress"]["message"].startswith("running")
    r = alice.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "cancelled"
    t0 = time.monotonic()
    while any(s.status == "running" for s in _shard_rows(settings, job["id"])):
        assert time.monotonic() - t0 < 60, "the running shard did not stop"
        time.sleep(0.2)
    final = alice.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "cancelled" and final["artifacts"] == []
    assert {s["status"] for s in final["shards"]} == {"cancelled"}
    # Stopped by the cooperative check between chunks, long before the end of its shard.
    assert max(s["fraction"] for s in final["shards"]) < 0.5


def test_work_the_broker_never_got_is_sent_again_by_the_reconciler(
    alice: httpx.Client, settings: Settings
) -> None:
    """Submitted while the broker is unreachable: 202 all the same (the row is the truth), its
    shards held (fair dispatch, 714814f: a send that failed is not left in flight until
    NADS_STALE_AFTER_S), and the reconciler's next pass sends them to the free slots; the
    worker's finished shards let the rest out."""
    unreachable = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    body = {**LOGREG, "seed": 11}
    with ServerThread(create_app(unreachable)) as server:
        r = httpx.post(server.url + "/v1/jobs/nads", json=body, timeout=60,
                       headers={"Authorization": alice.headers["Authorization"]})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    time.sleep(1.5)
    assert alice.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"  # nothing was sent
    with session_scope(settings.resolved_database_url) as session:  # the broker is back
        reconcile_once(session, make_celery(settings), settings)  # sends to the free slots
    # Done within wait_for_job's 120 s: no shard waited NADS_STALE_AFTER_S (900 s) for a message
    # the broker never got (tests/jobs/test_fairness.py checks the held rows themselves).
    assert settings.stale_after_s == 900
    done = wait_for_job(alice, job_id)
    assert done["status"] == "succeeded", done["error"]
    assert_matches_in_process(alice, done, body)


def test_a_shard_lost_with_its_worker_is_redone_with_the_same_numbers(
    alice: httpx.Client, settings: Settings, finished: dict
) -> None:
    """Rewinds a finished job to 'shard 1 was running when its worker died' and reconciles."""
    job = finished["lenet"]
    before = {a["name"]: a["sha256"] for a in job["artifacts"]}
    partial_before = lose_shard(settings, job["id"], 1, 0.3)
    done = wait_for_job(alice, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["shards"][1]["attempts"] == 2
    # The .npz of a partial holds timings and zip dates, so compare its numbers, not its bytes.
    partial_after = _shard_rows(settings, job["id"])[1].partial_sha256
    blobs = BlobStore(settings.resolved_blob_dir)
    old, new = (PartialNADs.load(blobs.path(sha)) for sha in (partial_before, partial_after))
    assert (new.key, new.start, new.stop) == (old.key, old.start, old.stop)
    for name in ("eval_point", "gradients", "count", "sums", "outer"):
        a, b = getattr(new, name), getattr(old, name)
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)
    assert {a["name"]: a["sha256"] for a in done["artifacts"]} == before


def test_a_killed_worker_process_does_not_lose_the_shard(alice: httpx.Client,
                                                         worker: object) -> None:
    """SIGKILL the pool process mid-shard: the message is redelivered and the job succeeds."""
    body = {"architecture": "lenet", "input_shape": [1, 16, 16], "num_networks": 1200,
            "seed": 21, "shards": 1}
    job = alice.post("/v1/jobs/nads", json=body).json()
    deadline = time.monotonic() + 60
    while True:
        current = alice.get(f"/v1/jobs/{job['id']}").json()
        if current["shards"][0]["fraction"] > 0:
            break
        assert time.monotonic() < deadline, current
        time.sleep(0.05)
    children = psutil.Process(worker.pid).children()
    assert children, "no pool process"
    for child in children:
        os.kill(child.pid, signal.SIGKILL)
    done = wait_for_job(alice, job["id"], timeout=120)
    assert done["status"] == "succeeded", done["error"]
    assert done["shards"][0]["attempts"] == 2
    # The redelivered shard changes nothing, bit for bit; the engine's numbers against the
    # paper's loop (1,200 LeNets one at a time here) are the sharded tests' concern.
    assert_matches_in_process(alice, done, body, independent=False)


def test_metrics_count_finished_jobs(anonymous: httpx.Client, finished: dict) -> None:
    text = anonymous.get("/metrics", headers=METRICS_AUTH).text
    line = next(x for x in text.splitlines()
                if x.startswith('nads_jobs{kind="nads",state="succeeded"}'))
    assert float(line.split()[-1]) >= 2
    assert 'nads_job_duration_seconds_count{kind="nads",state="succeeded"}' in text
