"""Uploaded architectures end to end: HTTP upload -> blob -> validation in a limited child of
the real Celery worker -> ready or rejected -> NAD and probe jobs that use them.

Run with NADS_TEST_REDIS_DB=10 (its own Redis database).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from sqlalchemy import select
from torch import nn

from api.main import create_app
from jobs.broker import make_celery
from jobs.dispatch import validation_lost_after_s
from nadcore import subspace_overlap
from nads.export_command import export_architecture
from store.db import session_scope
from store.models import Architecture, utcnow
from store.settings import Settings
from tests.bad_models import NaN, Raises, scripted_bytes
from tests.support import ServerThread, reference, wait_for_job
from worker.reconcile import reconcile_once

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("worker")]
SHAPE = [1, 16, 16]


def upload(client: httpx.Client, data: bytes, filename: str = "model.pt",
           shape: list[int] = SHAPE, init: str | None = None) -> httpx.Response:
    fields = {"name": filename.split(".")[0], "input_shape": ",".join(map(str, shape))}
    if init is not None:
        fields["init"] = init
    return client.post("/v1/architectures", data=fields,
                       files={"file": (filename, data, "application/octet-stream")})


def wait_validated(client: httpx.Client, arch_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        row = client.get(f"/v1/architectures/{arch_id}").json()
        if row["status"] != "validating":
            return row
        assert time.monotonic() < deadline, row
        time.sleep(0.2)


@pytest.fixture(scope="module")
def lenets(alice: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The built-in LeNet uploaded as TorchScript and as a torch.export program, validated."""
    folder = tmp_path_factory.mktemp("archives")
    rows = {}
    for suffix in ("pt", "pt2"):
        path = export_architecture("lenet", tuple(SHAPE), Path(folder) / f"lenet.{suffix}")
        r = upload(alice, path.read_bytes(), path.name)
        assert r.status_code == 201, r.text
        row = r.json()
        assert row["status"] == "validating" and row["format"] is None
        assert r.headers["location"] == f"/v1/architectures/{row['id']}"
        assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        rows[suffix] = row
    for suffix, row in rows.items():
        rows[suffix] = wait_validated(alice, row["id"])
    return rows


def test_upload_validate_read_list_and_owner_scope(alice: httpx.Client, bob: httpx.Client,
                                                   lenets: dict) -> None:
    for suffix, fmt in (("pt", "torchscript"), ("pt2", "export")):
        row = lenets[suffix]
        assert row["status"] == "ready", row
        assert row["format"] == fmt and row["reason"] is None
        info = row["info"]
        assert info["num_outputs"] == 1 and info["num_params"] == 2572 + 12289
        assert info["module_types"] == {"Conv2d": 2, "Linear": 3}
        assert info["flops"] > 0 and info["unknown_params"] == []
        assert bob.get(f"/v1/architectures/{row['id']}").status_code == 404
        assert bob.delete(f"/v1/architectures/{row['id']}").status_code == 404
    mine = [a["id"] for a in alice.get("/v1/architectures").json()["items"]]
    assert {lenets["pt"]["id"], lenets["pt2"]["id"]} <= set(mine)
    assert not {lenets["pt"]["id"]} & {a["id"] for a in
                                       bob.get("/v1/architectures").json()["items"]}


@pytest.mark.parametrize("suffix", ["pt", "pt2"])
def test_nad_job_on_an_uploaded_lenet_matches_the_builtin(alice: httpx.Client, lenets: dict,
                                                          suffix: str) -> None:
    common = {"input_shape": SHAPE, "num_networks": 48, "seed": 4, "method": "autograd"}
    body = {**common, "architecture": {"id": lenets[suffix]["id"]}, "shards": 2}
    r = alice.post("/v1/jobs/nads", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    stored = job["spec"]["architecture"]
    assert stored == {"id": lenets[suffix]["id"], "sha256": lenets[suffix]["sha256"],
                      "init": "torch-default", "output": None}  # alone reproduces the job
    assert job["estimate"]["flops"] == pytest.approx(
        lenets[suffix]["info"]["flops"] * 3 * 48)
    job = wait_for_job(alice, job["id"])
    assert job["status"] == "succeeded", job
    got = np.load(io.BytesIO(alice.get(f"/v1/jobs/{job['id']}/artifacts/nads.npy").content))
    builtin = reference({**common, "architecture": "lenet"})
    assert subspace_overlap(got, builtin["nads"], 16) >= 0.9


def test_job_specs_are_checked_against_the_architecture(alice: httpx.Client, bob: httpx.Client,
                                                        lenets: dict) -> None:
    arch = {"id": lenets["pt"]["id"]}
    base = {"architecture": arch, "input_shape": SHAPE, "num_networks": 4}

    def refused(client: httpx.Client, body: dict, field: str) -> str:
        r = client.post("/v1/jobs/nads", json=body)
        assert r.status_code == 422, r.text
        text = r.text
        assert field in text, text
        return text

    refused(bob, base, "no architecture")  # another user's id reads as a missing one
    refused(alice, {**base, "input_shape": [1, 32, 32]}, "input_shape")
    refused(alice, {**base, "output_index": 1}, "output_index")
    refused(alice, {**base, "architecture": {**arch, "init": "keep"}}, "architecture.init")
    refused(alice, {**base, "architecture": {"id": "f" * 32}}, "architecture.id")
    r = alice.post("/v1/jobs/probe", json={"architecture": arch, "input_shape": SHAPE,
                                          "directions": {"kind": "random", "count": 1}})
    assert r.status_code == 422 and "exactly 2" in r.text, r.text


def test_probe_job_trains_an_uploaded_model(alice: httpx.Client) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    r = upload(alice, scripted_bytes(model), "logreg2.pt", shape=[1, 4, 4], init="normal:0.05")
    row = wait_validated(alice, r.json()["id"])
    assert row["status"] == "ready" and row["init"] == "normal:0.05", row
    r = alice.post("/v1/jobs/probe", json={
        "architecture": {"id": row["id"]}, "input_shape": [1, 4, 4],
        "directions": {"kind": "random", "count": 2}, "data": {"num_train": 64, "num_test": 64},
        "training": {"epochs": 2, "batch_size": 32}})
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["architecture"]["init"] == "normal:0.05"
    job = wait_for_job(alice, r.json()["id"])
    assert job["status"] == "succeeded", job


def test_rejections_name_the_reason_and_the_worker_survives(
        alice: httpx.Client, worker: subprocess.Popen, tmp_path: Path) -> None:
    checkpoint = io.BytesIO()
    torch.save(nn.Linear(4, 1), checkpoint)
    program = torch.export.export(NaN().eval(), (torch.zeros(2, 1, 2, 2),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "nan.pt2"))
    three = torch.export.export(nn.Sequential(nn.Flatten(), nn.Linear(12, 1)).eval(),
                                (torch.zeros(2, 3, 2, 2),),
                                dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(three, str(tmp_path / "three.pt2"))  # 3 channels, declared as 1
    # Not an archive of the declared format: refused in the upload's own request (422), and
    # nothing stored (the worker would say the same minutes later).
    before = len(alice.get("/v1/architectures").json()["items"])
    for data, name, reason in (
            (b"import torch\n", "model.py", "file: not a zip archive"),
            (b"\x80\x04K\x01.", "x.pt", "file: a plain pickle"),
            (checkpoint.getvalue(), "x.pt", "file: a torch.save checkpoint"),
            (scripted_bytes(Raises()), "x.pt2", "file: 'x.pt2' is named as a torch.export")):
        r = upload(alice, data, name, shape=[1, 2, 2])
        assert r.status_code == 422, r.text
        [detail] = r.json()["detail"]
        assert detail["field"] == "file" and detail["msg"].startswith(reason), detail
        assert "torch.export.save" in detail["msg"] or "named as" in reason
    assert len(alice.get("/v1/architectures").json()["items"]) == before
    cases = [
        (scripted_bytes(Raises()), "x.pt", "deliberately broken"),
        ((tmp_path / "nan.pt2").read_bytes(), "nan.pt2", "non-finite outputs"),
        ((tmp_path / "three.pt2").read_bytes(), "three.pt2", "input_shape: 1,2,2 disagrees "
         "with the uploaded program in channels: declared 1, the program takes 3"),
    ]  # one that runs forever: tests/service/test_validation_fairness.py (a short time limit)
    ids = []
    for data, name, _ in cases:
        r = upload(alice, data, name, shape=[1, 2, 2])
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    for arch_id, (_, _, reason) in zip(ids, cases, strict=True):
        row = wait_validated(alice, arch_id)
        assert row["status"] == "rejected" and reason in row["reason"], row
    # the worker's sandboxed children failed, not the worker: it takes the next upload
    assert worker.poll() is None
    good = upload(alice, scripted_bytes(nn.Sequential(nn.Flatten(), nn.Linear(4, 1))), "ok.pt",
                  shape=[1, 2, 2])
    assert wait_validated(alice, good.json()["id"])["status"] == "ready"
    r = alice.post("/v1/jobs/nads", json={"architecture": {"id": ids[0]}, "input_shape": [1, 2, 2],
                                          "num_networks": 2})
    assert r.status_code == 422 and "rejected" in r.text


def test_oversized_and_malformed_uploads(alice: httpx.Client, settings: Settings) -> None:
    limit = settings.max_architecture_bytes
    big = os.urandom(limit + 1)
    r = upload(alice, big, "big.pt")
    assert r.status_code == 413, r.text
    assert f"{limit:,}" in r.text and "NADS_MAX_ARCHITECTURE_BYTES" in r.text

    def chunked():  # no Content-Length: refused while streaming
        boundary = b"b0undary"
        yield (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
               b'filename="big.pt"\r\n\r\n')
        for start in range(0, len(big), 1 << 16):
            yield big[start:start + (1 << 16)]
        yield b"\r\n--" + boundary + b"--\r\n"

    r = alice.post("/v1/architectures", content=chunked(),
                   headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    assert r.status_code == 413 and "NADS_MAX_ARCHITECTURE_BYTES" in r.text, r.text
    for fields, field in (({"name": "x", "input_shape": "1,32"}, "input_shape"),
                          ({"name": "x", "input_shape": "1,32,32", "init": "xavier"}, "init"),
                          ({"input_shape": "1,32,32"}, "name"),
                          ({"name": "../../x", "input_shape": "1,32,32"}, "name")):
        r = alice.post("/v1/architectures", data=fields,
                       files={"file": ("m.pt", b"PK\x03\x04", "application/octet-stream")})
        assert r.status_code == 422 and field in r.text, r.text


def test_delete_keeps_stored_jobs_reproducible(alice: httpx.Client, tmp_path: Path) -> None:
    path = export_architecture("logreg", (1, 4, 4), tmp_path / "logreg.pt2")
    row = wait_validated(alice, upload(alice, path.read_bytes(), "logreg.pt2",
                                       shape=[1, 4, 4]).json()["id"])
    r = alice.post("/v1/jobs/nads", json={"architecture": {"id": row["id"]},
                                          "input_shape": [1, 4, 4], "num_networks": 6})
    assert r.status_code == 202, r.text
    assert alice.delete(f"/v1/architectures/{row['id']}").status_code == 204
    assert alice.get(f"/v1/architectures/{row['id']}").status_code == 404
    job = wait_for_job(alice, r.json()["id"])  # runs from its spec: the archive's sha256
    assert job["status"] == "succeeded", job


def test_a_validation_the_broker_never_got_is_sent_again_by_the_reconciler(
        alice: httpx.Client, settings: Settings, tmp_path: Path) -> None:
    """Uploaded while the broker is unreachable: 201 all the same (the row is the truth), the
    architecture stays `validating`, held for the lane (the send failed), and the next
    reconciler pass sends it. A validation sent and never finished (its message lost with a
    killed worker) is sent again once `validation_lost_after_s` has passed, not before."""
    path = export_architecture("logreg", tuple(SHAPE), tmp_path / "logreg.pt2")
    unreachable = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with ServerThread(create_app(unreachable)) as server:
        r = httpx.post(server.url + "/v1/architectures", timeout=60,
                       headers={"Authorization": alice.headers["Authorization"]},
                       data={"name": "lost", "input_shape": "1,16,16"},
                       files={"file": ("logreg.pt2", path.read_bytes())})
    assert r.status_code == 201, r.text
    arch_id = r.json()["id"]
    time.sleep(1.0)
    assert alice.get(f"/v1/architectures/{arch_id}").json()["status"] == "validating"
    with session_scope(settings.resolved_database_url) as session:
        row = session.scalar(select(Architecture).where(Architecture.id == arch_id))
        assert row.validation_sent_at is None  # held again after the failed send
        # ...and taken, as far as the service knows, by a worker that died with its message:
        # time passing simulated by moving the row's clocks back
        row.validation_sent_at = utcnow() - timedelta(hours=1)
    lost_after = validation_lost_after_s(settings)
    assert lost_after == 2 * Settings().architecture_validation_timeout_s + 60
    for age, resent in ((lost_after - 30, False), (lost_after + 1, True)):
        with session_scope(settings.resolved_database_url) as session:
            row = session.scalar(select(Architecture).where(Architecture.id == arch_id))
            row.updated_at = utcnow() - timedelta(seconds=age)
        with session_scope(settings.resolved_database_url) as session:
            reconcile_once(session, make_celery(settings), settings)
            row = session.scalar(select(Architecture).where(Architecture.id == arch_id))
            # held again (and sent, when the lane has a free process): stamped now
            assert (utcnow() - row.updated_at < timedelta(seconds=60)) == resent, age
    assert wait_validated(alice, arch_id)["status"] == "ready"
