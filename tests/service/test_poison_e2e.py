"""Poison jobs and uploads end to end: HTTP -> Postgres -> Redis -> a real Celery worker ->
blobs -> HTTP.

A poison job is sharded by position in `indices`; its metrics must equal
`nadcore.poison.engine.run_poison` on the same spec in this process (position p is seeded by
(seed, p) whichever shard trains it).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
from functools import partial

import httpx
import numpy as np
import pytest
import torch
from sqlalchemy import func, select

from api.main import create_app
from nadcore.poison.datasets import load_dataset, load_npz
from nadcore.poison.engine import flip_dataset, poison_dataset, run_poison
from nadcore.poison.spec import PoisonSpec
from nadcore.specs.layer_counts import layer_count
from store.db import session_scope
from store.models import Job, Upload
from store.settings import Settings
from tests.support import (
    METRICS_AUTH,
    ServerThread,
    cancel_once_running,
    refused_messages,
    submit_job,
    wait_for_job,
)

from .test_probe_e2e import assert_png, download, download_npy

# The acceptance example, exactly as written there (J: the LeNet NAD job's id).
ACCEPTANCE = """{"architecture": "lenet", "dataset": {"name": "digits"}, "nads": {"job": "J"},
 "indices": [0, 600], "training": {"epochs": 8}, "seed": 0}"""
# LeNet NADs on 1x32x32: 1,023 rows (index 600 needs rows 600..604 for digits' 10 classes).
NAD_JOB = {"architecture": "lenet", "input_shape": [1, 32, 32], "num_networks": 1024,
           "method": "autograd", "seed": 0}
SMALL_NAD_JOB = {"architecture": "lenet", "input_shape": [1, 16, 16], "num_networks": 16,
                 "method": "autograd"}
POISON_ARTIFACTS = {"metrics.json": "application/json",
                    "metrics.npy": "application/octet-stream",
                    "accuracy_vs_index.png": "image/png", "curves.png": "image/png",
                    "examples.png": "image/png"}


def _count(settings: Settings, model: type) -> int:
    with session_scope(settings.resolved_database_url) as session:
        return session.scalar(select(func.count()).select_from(model))


def reference(body: dict, nads: np.ndarray, upload: bytes | None = None) -> np.ndarray:
    """run_poison in this process, one thread like the test worker: (n, epochs, 2)."""
    spec = PoisonSpec.model_validate(body)
    data = load_dataset(spec.dataset,
                        upload_path=None if upload is None else io.BytesIO(upload))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = run_poison(spec, data, nads)
    finally:
        torch.set_num_threads(threads)
    return np.stack([np.stack([r.train_accuracy, r.test_accuracy], axis=-1) for r in results])


submit = partial(submit_job, path="/v1/jobs/poison")
refused = partial(refused_messages, path="/v1/jobs/poison")


def upload(client: httpx.Client, data: bytes, kind: str, filename: str = "f.bin"
           ) -> httpx.Response:
    return client.post("/v1/uploads", data={"kind": kind},
                       files={"file": (filename, data, "application/octet-stream")})


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def small_digits() -> dict[str, np.ndarray]:
    """240 digits as an upload would carry them: uint8 N x H x W x C, integer labels."""
    data = load_dataset(PoisonSpec.model_validate(
        {"dataset": {"name": "digits"}, "nads": {"job": "x"}, "indices": [0]}).dataset)
    x = (data.x_train[:240].numpy().transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
    return {"x": x, "y": data.y_train[:240].numpy().astype(np.int32)}


# --- Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nad_job(alice: httpx.Client, worker: object) -> dict:
    r = alice.post("/v1/jobs/nads", json=NAD_JOB)
    assert r.status_code == 202, r.text
    job = wait_for_job(alice, r.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["summary"]["num_nads"] == 1023
    return job


@pytest.fixture(scope="module")
def nads(alice: httpx.Client, nad_job: dict) -> np.ndarray:
    return download_npy(alice, nad_job, "nads.npy")


# --- Uploads (the API alone) -------------------------------------------------------------------


def test_upload_round_trip_list_read_delete(alice: httpx.Client, bob: httpx.Client,
                                            settings: Settings) -> None:
    content = npz_bytes(**small_digits())
    r = upload(alice, content, "dataset", "digits.npz")
    assert r.status_code == 201, r.text
    row = r.json()
    assert r.headers["location"] == f"/v1/uploads/{row['id']}"
    assert row["kind"] == "dataset" and row["filename"] == "digits.npz"
    assert row["size"] == len(content)
    assert row["sha256"] == hashlib.sha256(content).hexdigest()
    assert (settings.resolved_blob_dir / row["sha256"][:2] / row["sha256"]).read_bytes() == content
    assert alice.get(f"/v1/uploads/{row['id']}").json() == row
    assert row["id"] in [u["id"] for u in alice.get("/v1/uploads").json()["items"]]
    assert all(u["kind"] == "nads"
               for u in alice.get("/v1/uploads", params={"kind": "nads"}).json()["items"])
    # Another user's upload reads exactly like a missing one.
    r = bob.get(f"/v1/uploads/{row['id']}")
    assert r.status_code == 404
    assert r.json()["detail"] == f"upload_id: upload {row['id']!r} not found"
    assert row["id"] not in [u["id"] for u in bob.get("/v1/uploads").json()["items"]]
    assert bob.delete(f"/v1/uploads/{row['id']}").status_code == 404
    assert alice.delete(f"/v1/uploads/{row['id']}").status_code == 204
    assert alice.get(f"/v1/uploads/{row['id']}").status_code == 404


@pytest.mark.parametrize(
    ("kind", "content", "field", "words"),
    [
        ("dataset", b"just some text, not a zip", "file", ["not a .npz", "PK"]),
        ("dataset", npy_bytes(np.zeros(3)), "file", ["not a .npz"]),
        ("nads", npz_bytes(a=np.zeros(3)), "file", ["not a .npy", "NUMPY"]),
        ("weights", npy_bytes(np.zeros(3)), "kind", ["'weights'", "dataset", "nads"]),
    ],
)
def test_uploads_with_the_wrong_magic_or_kind_are_422_naming_the_field(
    alice: httpx.Client, settings: Settings, kind: str, content: bytes, field: str,
    words: list[str]
) -> None:
    before = _count(settings, Upload)
    r = upload(alice, content, kind)
    assert r.status_code == 422, r.text
    msg = r.json()["detail"][0]["msg"]
    assert msg.startswith(f"{field}: ") and all(w in msg for w in words), msg
    assert _count(settings, Upload) == before
    r = alice.post("/v1/uploads", data={"kind": "nads"}, files={"other": ("a", b"x")})
    assert r.status_code == 422 and r.json()["detail"][0]["msg"].startswith("file: missing")


def test_an_upload_over_the_limit_is_413_naming_the_limit(alice: httpx.Client,
                                                          settings: Settings) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 4096})
    before = _count(settings, Upload)
    tmp_before = set((settings.resolved_blob_dir / "tmp").glob("upload-*"))
    content = npy_bytes(np.zeros(2048, dtype=np.float32))  # 8,320 bytes
    expected = "file: upload exceeds the limit of 4,096 bytes (NADS_MAX_UPLOAD_BYTES)"
    with ServerThread(create_app(small)) as server:
        headers = {"Authorization": alice.headers["Authorization"]}
        # Content-Length says so: refused before the body is read.
        r = httpx.post(server.url + "/v1/uploads", headers=headers, data={"kind": "nads"},
                       files={"file": ("big.npy", content)}, timeout=30)
        assert r.status_code == 413 and r.json()["detail"] == expected
        # Chunked, no Content-Length: refused while streaming, once past the limit.
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\nnads\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"big.npy\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                ).encode() + content + f"\r\n--{boundary}--\r\n".encode()

        def chunks():
            for i in range(0, len(body), 1000):
                yield body[i:i + 1000]

        r = httpx.post(server.url + "/v1/uploads", content=chunks(), timeout=30,
                       headers=headers | {"Content-Type":
                                          f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 413 and r.json()["detail"] == expected
        # Under the limit, the same server takes it.
        ok = httpx.post(server.url + "/v1/uploads", headers=headers, data={"kind": "nads"},
                        files={"file": ("ok.npy", npy_bytes(np.zeros(900, np.float32)))},
                        timeout=30)  # 3,728 bytes (a truncated .npy is refused, see test_bounds)
        assert ok.status_code == 201, ok.text
    assert _count(settings, Upload) == before + 1
    assert set((settings.resolved_blob_dir / "tmp").glob("upload-*")) == tmp_before


# --- Validation (the API alone) ----------------------------------------------------------------

BASE = {"architecture": "lenet", "dataset": {"name": "digits"}, "nads": {"job": "x"},
        "indices": [0], "training": {"epochs": 1}}


@pytest.mark.parametrize(
    ("extra", "start", "words"),
    [
        ({"indices": []}, "indices", ["at least 1"]),
        ({"indices": [-1]}, "indices.0", ["greater than or equal to 0"]),
        ({"eps": 0}, "eps", ["greater than 0"]),
        ({"mode": "flip", "indices": [0, 1]}, "indices", ["flip mode"]),
        ({"indices": [0, 1], "shards": 3}, "shards", ["3 exceeds the 2 indices"]),
        ({"dataset": {"name": "digits", "upload": "u"}}, "dataset", ["exactly one"]),
        ({"dataset": {"name": "mnist"}}, "dataset.name", ["digits", "cifar10"]),
        ({"nads": {}}, "nads", ["exactly one of job and upload"]),
        ({"architecture": "alexnet9"}, "architecture", ["unknown architecture"]),
        ({"training": {"epochs": 0}}, "training.epochs", ["greater than or equal to 1"]),
        ({"mode": "bad"}, "mode", ["poison", "flip"]),
    ],
)
def test_invalid_poison_specs_are_422_naming_the_field(
    alice: httpx.Client, settings: Settings, extra: dict, start: str, words: list[str]
) -> None:
    before = _count(settings, Job)
    msgs = refused(alice, {**BASE, **extra})
    assert any(m.startswith(start) and all(w in m for w in words) for m in msgs), msgs
    assert _count(settings, Job) == before


@pytest.mark.slow
def test_references_are_checked_at_submission(alice: httpx.Client, bob: httpx.Client,
                                              nad_job: dict, settings: Settings) -> None:
    before = _count(settings, Job)
    job_id = nad_job["id"]
    body = {**BASE, "nads": {"job": job_id}}
    # Another user's NAD job reads exactly like a missing one.
    assert refused(bob, body) == [f"nads.job: no job {job_id!r} of yours"]
    assert refused(alice, {**body, "nads": {"job": "0123456789abcdef"}}) == [
        "nads.job: no job '0123456789abcdef' of yours"]
    msg = refused(alice, {**body, "indices": [0, 1019]})[0]
    assert msg == (f"indices: index 1019 needs NAD rows 1019..1023 (10 classes, 1 channel(s)), "
                   f"NAD job {job_id!r} has 1023 NADs (rows 0 to 1022)")
    r = alice.post("/v1/jobs/nads", json=SMALL_NAD_JOB)
    small = wait_for_job(alice, r.json()["id"])
    msg = refused(alice, {**body, "nads": {"job": small["id"]}})[0]
    assert msg.startswith(f"nads.job: NAD job {small['id']!r} has input_shape [1, 16, 16]")
    msg = refused(alice, {**body, "dataset": {"name": "cifar10"}, "nads": {"job": small["id"]}})
    assert "needs the NADs of a 1-channel 32x32 architecture, input_shape [1, 32, 32]" in msg[0]
    r = alice.post("/v1/jobs/nads", json={**SMALL_NAD_JOB, "input_shape": [1, 32, 32]})
    few = wait_for_job(alice, r.json()["id"])["id"]
    msg = refused(alice, {**body, "nads": {"job": few}, "mode": "flip"})
    assert msg == [f"nads.job: flip needs a complete NAD basis of H*W = 1024 rows (or 1023); "
                   f"NAD job {few!r} has 15"]
    # Uploads: the caller's, of the right kind.
    nads_upload = upload(alice, npy_bytes(np.eye(4, dtype=np.float32)), "nads").json()["id"]
    msgs = refused(alice, {**body, "dataset": {"upload": nads_upload}})
    assert msgs == [f"dataset.upload: upload {nads_upload!r} is a nads upload, not a .npz "
                    "dataset"]
    msgs = refused(bob, {**body, "nads": {"upload": nads_upload}})
    assert msgs == [f"nads.upload: no upload {nads_upload!r} of yours"]
    msgs = refused(bob, {**body, "dataset": {"upload": nads_upload}, "nads": {"upload": "u"}})
    assert msgs == [f"dataset.upload: no upload {nads_upload!r} of yours"]
    # The quota: models (100 indices and the clean run) x epochs x training-set size.
    r = alice.post("/v1/jobs/poison", json={**body, "dataset": {"name": "cifar10"},
                                             "nads": {"upload": nads_upload},
                                             "indices": list(range(100)),
                                             "training": {"epochs": 1000}})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert ("estimated train_samples 5,050,000,000 (models x epochs x training-set size, a model "
            "per index and one clean run) exceeds the limit 1,000,000,000 "
            "(NADS_MAX_POISON_TRAIN_SAMPLES)") in detail["msg"]
    assert detail["estimate"]["train_size"] == 50_000
    assert _count(settings, Job) == before + 2  # only the small NAD jobs


# --- End to end through the worker -------------------------------------------------------------


@pytest.mark.slow
def test_the_acceptance_example_as_written(alice: httpx.Client, nad_job: dict,
                                           nads: np.ndarray) -> None:
    text = ACCEPTANCE.replace('"J"', json.dumps(nad_job["id"]))
    job = submit(alice, text)
    assert job["kind"] == "poison" and job["mode"] == "sharded"
    assert [(s["start"], s["stop"]) for s in job["shards"]] == [(0, 3)]  # and the clean run
    # Three models (the two indices and the clean run), each epoch a training step of 3 and
    # the accuracies of 1 forward pass per image of digits' 1,437 training and 360 test images.
    estimate = dict(job["estimate"])
    run = estimate.pop("run")
    macs = layer_count("lenet", (1, 32, 32), 10).macs
    assert estimate == {"indices": 2, "models": 3, "epochs": 8, "train_size": 1437,
                        "train_samples": 3 * 8 * 1437,
                        "flops": 2.0 * macs * 3 * 8 * (4 * 1437 + 360)}
    assert run["accepted_long"] is False and run["basis"], run  # the fleet's: 2 CPU processes
    job = wait_for_job(alice, job["id"])
    assert job["status"] == "succeeded", job["error"]
    # Finished: no time left to estimate (eta_s is for a queued or running job)
    assert job["progress"] == {"fraction": 1.0, "message": "succeeded", "eta_s": None}
    assert {a["name"]: a["media_type"] for a in job["artifacts"]} == POISON_ARTIFACTS
    got = download_npy(alice, job, "metrics.npy")
    assert got.shape == (2, 8, 2) and got.dtype == np.float64
    np.testing.assert_array_equal(got, reference(json.loads(text), nads))
    metrics = json.loads(download(alice, job, "metrics.json"))
    assert [m["index"] for m in metrics["indices"]] == [0, 600]
    for row, m in zip(got, metrics["indices"], strict=True):
        assert m["eps"] == 0.05
        np.testing.assert_allclose(m["train_accuracy"], row[:, 0], atol=1e-5)
        np.testing.assert_allclose(m["test_accuracy"], row[:, 1], atol=1e-5)
        assert m["final_test_accuracy"] == pytest.approx(row[-1, 1], abs=1e-5)
    assert_png(download(alice, job, "accuracy_vs_index.png"))
    assert_png(download(alice, job, "examples.png"))
    summary = job["summary"]
    assert summary["dataset"] == "digits" and summary["train_size"] == 1437
    assert [f["index"] for f in summary["final"]] == [0, 600]
    assert [f["test_accuracy"] for f in summary["final"]] == pytest.approx(got[:, -1, 1],
                                                                          abs=1e-4)
    metrics_clean = metrics["clean"]  # the clean run: same seed and recipe, unpoisoned data
    assert summary["clean_accuracy"] == pytest.approx(metrics_clean["final_test_accuracy"],
                                                      abs=1e-4)
    assert len(metrics_clean["test_accuracy"]) == 8
    print(f"\nacceptance example: run_s {job['timings']['run_s']:.1f}, final clean test "
          f"accuracy {summary['final']}")


@pytest.mark.slow
def test_a_sharded_job_on_an_uploaded_dataset_keeps_its_poisoned_sets(
    alice: httpx.Client, nad_job: dict, nads: np.ndarray
) -> None:
    content = npz_bytes(**small_digits())
    up = upload(alice, content, "dataset", "small.npz").json()
    body = {"architecture": "lenet", "dataset": {"upload": up["id"]},
            "nads": {"job": nad_job["id"]}, "indices": [3, 40, 7], "eps": 0.5,
            "training": {"epochs": 2, "batch_size": 64}, "keep_dataset": True, "seed": 4,
            "shards": 2}
    job = submit(alice, body)
    assert [(s["start"], s["stop"]) for s in job["shards"]] == [(0, 2), (2, 4)]
    # the quota counts the real training samples (from the .npy headers), not bytes
    assert job["estimate"]["train_size"] == load_npz(io.BytesIO(content)).x_train.shape[0]
    job = wait_for_job(alice, job["id"])
    assert job["status"] == "succeeded", job["error"]
    assert [s["status"] for s in job["shards"]] == ["succeeded", "succeeded"]
    names = {a["name"] for a in job["artifacts"]}
    assert names == set(POISON_ARTIFACTS) | {f"poisoned_train_{i}.npy" for i in (3, 40, 7)}
    # the storage quota reserved at submission exactly what the kept sets take
    assert job["estimate"]["kept_dataset_bytes"] == sum(
        a["size"] for a in job["artifacts"] if a["name"].startswith("poisoned_train_"))
    np.testing.assert_array_equal(download_npy(alice, job, "metrics.npy"),
                                  reference(body, nads, content))
    data = load_npz(io.BytesIO(content))
    kept = download_npy(alice, job, "poisoned_train_40.npy")
    assert kept.dtype == np.float32 and kept.shape == tuple(data.x_train.shape)
    expected = poison_dataset(data.x_train, data.y_train, nads, 40, 0.5,
                              num_classes=data.num_classes).numpy()
    np.testing.assert_array_equal(kept, expected)
    assert job["summary"]["train_size"] == data.x_train.shape[0]
    assert_png(download(alice, job, "examples.png"))


@pytest.mark.slow
def test_an_uploaded_nad_array_drives_a_flip_job(alice: httpx.Client, nads: np.ndarray
                                                 ) -> None:
    up = upload(alice, npy_bytes(nads), "nads", "lenet.npy").json()
    assert up["kind"] == "nads"
    body = {"architecture": "lenet", "dataset": {"name": "digits", "limit_train": 300,
                                                 "limit_test": 100},
            "nads": {"upload": up["id"]}, "indices": [0], "mode": "flip",
            "training": {"epochs": 2}, "keep_dataset": True, "seed": 1}
    job = wait_for_job(alice, submit(alice, body)["id"])
    assert job["status"] == "succeeded", job["error"]
    got = download_npy(alice, job, "metrics.npy")
    np.testing.assert_array_equal(got, reference(body, nads))
    metrics = json.loads(download(alice, job, "metrics.json"))
    assert metrics["mode"] == "flip" and metrics["indices"][0]["index"] is None
    data = load_dataset(PoisonSpec.model_validate(body).dataset)
    np.testing.assert_array_equal(download_npy(alice, job, "flipped_train.npy"),
                                  flip_dataset(data.x_train, nads).numpy())
    assert_png(download(alice, job, "accuracy_vs_index.png"))


@pytest.mark.slow
@pytest.mark.usefixtures("worker")
def test_a_bad_upload_fails_the_job_with_the_engines_message(alice: httpx.Client,
                                                             nad_job: dict) -> None:
    arrays = small_digits()
    # What the arrays' headers show is refused at upload (tests/api/test_size_bounds.py) ...
    r = upload(alice, npz_bytes(x=arrays["x"]), "dataset", "no-labels.npz")
    assert r.status_code == 422
    assert r.json()["detail"][0]["msg"] == "file: y: missing from the .npz (it has ['x'])"
    # ... what only the values show fails the job with the engine's message.
    x = arrays["x"].transpose(0, 3, 1, 2).astype(np.float32) / 127.5
    up = upload(alice, npz_bytes(x=x, y=arrays["y"]), "dataset", "too-bright.npz").json()
    body = {**BASE, "dataset": {"upload": up["id"]}, "nads": {"job": nad_job["id"]}}
    job = wait_for_job(alice, submit(alice, body)["id"])
    assert job["status"] == "failed"
    assert job["error"] == ("shard 0: ValueError: x: float images must lie in [0, 1], "
                            "found [0, 2]")
    assert job["artifacts"] == []


@pytest.mark.slow
def test_progress_counts_epochs_and_cancel_stops_a_poison_job(alice: httpx.Client,
                                                              nad_job: dict) -> None:
    body = {**BASE, "nads": {"job": nad_job["id"]}, "indices": [0, 1, 2, 3],
            "training": {"epochs": 30}, "shards": 2}
    # a job long enough to be cancelled while it runs: its estimate on a loaded machine may
    # cross NADS_MAX_ESTIMATED_RUN_S (the refusal is tests/service/test_estimates.py's)
    job = submit_job(alice, body, "/v1/jobs/poison?accept_long=true")
    assert [(s["start"], s["stop"]) for s in job["shards"]] == [(0, 2), (2, 5)]
    current, final = cancel_once_running(alice, job["id"])
    assert 0 < current["progress"]["fraction"] < 0.5
    # 4 indices and the clean run; the ETA follows while the shards run.
    assert re.fullmatch(r"running: [01]/2 shards done, \d+% of 5 models(, about .+ left)?",
                        current["progress"]["message"]), current["progress"]
    assert {s["status"] for s in final["shards"]} == {"cancelled"}
    assert final["artifacts"] == []


@pytest.mark.slow
def test_poison_jobs_are_listed_and_documented(alice: httpx.Client, anonymous: httpx.Client,
                                               nad_job: dict) -> None:
    items = alice.get("/v1/jobs", params={"kind": "poison"}).json()["items"]
    assert items and {j["kind"] for j in items} == {"poison"}
    text = anonymous.get("/metrics", headers=METRICS_AUTH).text
    assert 'nads_jobs{kind="poison",state="succeeded"}' in text
    paths = anonymous.get("/openapi.json").json()["paths"]
    assert "/v1/jobs/poison" in paths and "/v1/uploads" in paths
