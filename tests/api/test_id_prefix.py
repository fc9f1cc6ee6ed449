"""Ids by a unique prefix, like git (issue 27): `nads status ca3e0972` with the short id the
progress line prints. Only the caller's own rows are candidates: a prefix never tells whether
another user's id starts with it. Ids are set here to chosen values (real rows, real API)."""

from __future__ import annotations

import io
import uuid

import httpx
import numpy as np
from sqlalchemy import update

from nads.client import Client
from nads.client import Job as ClientJob
from store.db import session_scope
from store.models import Job, Upload
from store.settings import Settings
from tests.support import new_key

SPEC = {"architecture": "logreg", "input_shape": [1, 8, 8], "num_networks": 8, "seed": 1}


def _renamed(settings: Settings, model: type, old: str, start: str) -> str:
    """Gives row `old` an id starting with `start` (the rest random); returns it."""
    new = start + uuid.uuid4().hex[len(start):]
    with session_scope(settings.resolved_database_url) as session:
        session.execute(update(model).where(model.id == old).values(id=new))
    return new


def _job(client: httpx.Client) -> str:
    r = client.post("/v1/jobs/nads", json=SPEC)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _upload(client: httpx.Client) -> str:
    buf = io.BytesIO()
    np.save(buf, np.eye(4, dtype=np.float32))
    r = client.post("/v1/uploads", data={"kind": "nads"},
                    files={"file": ("n.npy", buf.getvalue(), "application/octet-stream")})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_job_routes_take_a_unique_prefix_of_the_callers_ids(
        alice: httpx.Client, bob: httpx.Client, settings: Settings) -> None:
    first = _renamed(settings, Job, _job(alice), "ca3e09720")  # never ca3e0972f..., as bob's
    second = _renamed(settings, Job, _job(alice), "ca3e11")
    bobs = _renamed(settings, Job, _job(bob), "ca3e0972f")  # shares alice's 8-digit prefix
    assert alice.get("/v1/jobs/ca3e0972").json()["id"] == first  # bob's is no candidate
    assert bob.get("/v1/jobs/ca3e0972").json()["id"] == bobs
    assert bob.get("/v1/jobs/ca3e").json()["id"] == bobs  # alice's two are none either
    r = alice.get("/v1/jobs/ca3e")
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert detail == (f"job_id: 'ca3e' is the start of 2 of your jobs ({first}, {second}); "
                      "give more characters")
    r = alice.get("/v1/jobs/ca3")
    assert r.status_code == 404
    assert r.json()["detail"] == ("job_id: job 'ca3' not found (an id prefix needs at least 4 "
                                  "characters)")
    assert alice.get(f"/v1/jobs/{bobs}").status_code == 404  # another user's whole id
    assert alice.get("/v1/jobs/ca3e0972f").status_code == 404  # another user's prefix
    assert alice.get("/v1/jobs/ca3e%25").status_code == 404  # no pattern characters
    r = alice.get("/v1/jobs/ca3e0972/artifacts/nads.npy")  # the job is found; not its file
    assert r.status_code in (200, 404) and "job_id" not in r.text
    r = alice.post("/v1/jobs/ca3e11/cancel")
    assert r.status_code == 202 and r.json()["id"] == second, r.text
    assert alice.delete("/v1/jobs/ca3e11").status_code == 204
    assert alice.get("/v1/jobs/ca3e").json()["id"] == first  # unique again


def test_uploads_and_spec_references_take_a_unique_prefix(
        alice: httpx.Client, bob: httpx.Client, settings: Settings) -> None:
    one = _renamed(settings, Upload, _upload(alice), "beef01")
    two = _renamed(settings, Upload, _upload(alice), "beef02")
    assert alice.get("/v1/uploads/beef01").json()["id"] == one
    r = alice.get("/v1/uploads/beef")
    assert r.status_code == 409 and r.json()["detail"].startswith("upload_id: 'beef' is the "
                                                                 "start of 2 of your uploads")
    assert bob.get("/v1/uploads/beef01").status_code == 404
    body = {"dataset": {"name": "digits"}, "indices": [0], "training": {"epochs": 1}}
    # A unique prefix stands for the whole id: the kind's own check then speaks of that id.
    r = alice.post("/v1/jobs/poison", json={**body, "dataset": {"upload": "beef02"},
                                            "nads": {"upload": one}})
    assert r.status_code == 422
    assert r.json()["detail"][0]["msg"] == (f"dataset.upload: upload {two!r} is a nads upload, "
                                            "not a .npz dataset")
    r = alice.post("/v1/jobs/poison", json={**body, "nads": {"upload": "beef"}})
    assert r.status_code == 422
    assert r.json()["detail"][0]["msg"].startswith("nads.upload: 'beef' is the start of 2 of "
                                                   "your uploads")
    r = bob.post("/v1/jobs/poison", json={**body, "nads": {"upload": "beef01"}})
    assert r.status_code == 422  # not bob's: as a missing one
    assert r.json()["detail"][0]["msg"] == "nads.upload: no upload 'beef01' of yours"


def test_client_wait_by_prefix_keeps_the_job_it_found(settings: Settings, api_url: str) -> None:
    """Client.wait with a prefix polls by the whole id once found: a job created meanwhile whose
    id starts the same way does not make the wait ambiguous."""
    with Client(api_url, new_key(settings, f"carol-{uuid.uuid4().hex[:6]}")) as carol:
        body = {"architecture": "lenet", "input_shape": [1, 32, 32], "num_networks": 20000}
        waited = _renamed(settings, Job, carol.submit("nads", body, accept_long=True).id, "dead0")
        polls: list[str] = []

        def on_progress(job: ClientJob) -> None:
            polls.append(job.status)
            if len(polls) == 1:  # another of carol's jobs now starts with "dead" too
                _renamed(settings, Job, carol.submit("nads", SPEC).id, "dead1")
            elif len(polls) == 2:
                carol.cancel(waited)

        done = carol.wait("dead", timeout=60, interval=0.2, on_progress=on_progress)
        assert done.id == waited and done.status == "cancelled" and len(polls) >= 3
