"""The REST API against the real Postgres and Redis: auth, validation, quotas, listing."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from api.main import create_app
from store.db import session_scope
from store.migrate import upgrade
from store.models import Job
from store.settings import Settings
from tests.fixtures import ThrowawayDatabases
from tests.support import METRICS_AUTH, METRICS_TOKEN, ServerThread, keyed_client, new_key

TINY = {"architecture": "logreg", "input_shape": [1, 8, 8], "num_networks": 8, "seed": 1}


def _job_count(settings: Settings) -> int:
    with session_scope(settings.resolved_database_url) as session:
        return session.scalar(select(func.count()).select_from(Job))


def test_health_and_readiness(anonymous: httpx.Client) -> None:
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    r = anonymous.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "broker": "ok", "blob_store": "ok"}


def test_readiness_reports_an_unreachable_broker(settings: Settings) -> None:
    broken = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with ServerThread(create_app(broken)) as server:
        r = httpx.get(server.url + "/readyz", timeout=30)
    assert r.status_code == 503
    assert r.json()["checks"]["database"] == "ok"
    assert r.json()["checks"]["broker"].startswith("error")


def test_openapi_lists_the_v1_routes(anonymous: httpx.Client) -> None:
    paths = anonymous.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs/nads", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel",
            "/v1/jobs/{job_id}/artifacts/{name}", "/healthz", "/readyz"} <= set(paths)
    assert anonymous.get("/docs").status_code == 200


def test_no_key_or_a_wrong_key_is_401(anonymous: httpx.Client) -> None:
    r = anonymous.post("/v1/jobs/nads", json=TINY)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert "missing API key" in r.json()["detail"]
    r = anonymous.get("/v1/jobs", headers={"Authorization": "Bearer nads_not-a-key"})
    assert r.status_code == 401
    assert "unknown" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({**TINY, "num_networks": 1}, "num_networks", ["greater than or equal to 2"]),
        ({**TINY, "input_shape": [1, 8, 9999]}, "input_shape.2", ["less than or equal to 512"]),
        ({**TINY, "architecture": "alexnet"}, "architecture", ["unknown architecture"]),
        ({**TINY, "method": "guess"}, "method", ["finite_difference", "autograd"]),
        ({**TINY, "k": 50}, "k", ["exceeds min(D, num_networks) = 8"]),
        ({**TINY, "shards": 9}, "shards", ["exceeds num_networks = 8"]),
        ({**TINY, "colour": "red"}, "colour", ["Extra inputs are not permitted"]),
        ({"input_shape": [1, 8, 8]}, "architecture", ["Field required"]),
    ],
)
def test_invalid_specs_are_422_naming_the_field_and_limit(
    alice: httpx.Client, settings: Settings, body: dict, field: str, words: list[str]
) -> None:
    before = _job_count(settings)
    r = alice.post("/v1/jobs/nads", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    msgs = [d["msg"] for d in detail]
    assert any(m.startswith(f"{field}:") or m.startswith(field.split(".")[0])
               for m in msgs), msgs
    assert any(all(w in m for w in words) for m in msgs), msgs
    assert _job_count(settings) == before  # nothing stored


def test_over_quota_is_refused_with_the_estimate_and_the_limit(settings: Settings) -> None:
    small = settings.model_copy(update={"max_forward_passes": 1000})
    key = new_key(settings, "quota-user")
    before = _job_count(settings)
    with ServerThread(create_app(small)) as server:
        r = httpx.post(server.url + "/v1/jobs/nads", json=TINY, timeout=30,
                       headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    # 8 networks x 2 x 64 pixels = 1,024 forward passes > 1,000
    assert ("forward_passes 1,024 (forward passes) exceeds the limit 1,000 "
            "(NADS_MAX_FORWARD_PASSES)") in detail["msg"]
    assert detail["estimate"]["forward_passes"] == 1024
    assert detail["limits"]["forward_passes"] == 1000
    assert _job_count(settings) == before


def test_other_users_jobs_are_404_and_unlisted(alice: httpx.Client, bob: httpx.Client) -> None:
    r = alice.post("/v1/jobs/nads", json=TINY)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["kind"] == "nads" and job["status"] in ("queued", "running", "succeeded")
    assert job["spec"]["architecture"] == "logreg" and job["spec"]["method"] == "finite_difference"
    assert job["estimate"]["forward_passes"] == 1024
    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/artifacts/nads.npy"):
        r = bob.get(path)
        assert r.status_code == 404, r.text
        assert job["id"] in r.json()["detail"]
    assert bob.post(f"/v1/jobs/{job['id']}/cancel").status_code == 404
    assert job["id"] not in [j["id"] for j in bob.get("/v1/jobs").json()["items"]]
    assert alice.get(f"/v1/jobs/{job['id']}").status_code == 200
    assert alice.get("/v1/jobs/0123456789abcdef").status_code == 404


@pytest.fixture
def quiet(databases: ThrowawayDatabases, tmp_path) -> Iterator[tuple[Settings, httpx.Client]]:
    """An API on a database of its own whose broker (the embedded filesystem broker in a
    private folder) no worker reads: every job stays queued until cancelled, so what a test
    asserts about queued jobs cannot race a worker, and the database holds only its jobs."""
    url = databases.create()
    upgrade(url)
    quiet_settings = Settings(data_dir=tmp_path, database_url=url, blob_dir=tmp_path / "blobs",
                              metrics_token=METRICS_TOKEN)
    key = new_key(quiet_settings, "quiet")
    with ServerThread(create_app(quiet_settings)) as server, keyed_client(server.url, key) as c:
        yield quiet_settings, c


def test_listing_is_newest_first_paginated_and_filtered(quiet) -> None:
    _, client = quiet
    ids = []
    for seed in range(5):
        r = client.post("/v1/jobs/nads", json={**TINY, "seed": seed})
        assert r.status_code == 202
        ids.append(r.json()["id"])
        if seed % 2 == 0:  # no worker: a queued job is always cancellable
            assert client.post(f"/v1/jobs/{ids[-1]}/cancel").status_code == 202
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params).json()
        assert len(page["items"]) <= 2
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    statuses = {j["id"]: j["status"] for j in client.get("/v1/jobs").json()["items"]}
    cancelled = [i for i in ids if statuses[i] == "cancelled"]
    assert cancelled == ids[0::2], statuses
    assert all(statuses[i] == "queued" for i in ids[1::2]), statuses
    r = client.get("/v1/jobs", params={"status": "cancelled", "kind": "nads"})
    assert [j["id"] for j in r.json()["items"]] == cancelled[::-1]
    bad = client.get("/v1/jobs", params={"limit": 1000})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["msg"].startswith("limit:")
    assert "100" in bad.json()["detail"][0]["msg"]
    bad = client.get("/v1/jobs", params={"status": "sleeping"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "status"
    bad = client.get("/v1/jobs", params={"cursor": "!!"})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("cursor:")


def test_cancelling_a_queued_job_then_again_is_409(quiet) -> None:
    _, client = quiet
    job = client.post("/v1/jobs/nads", json={**TINY, "shards": 2}).json()
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "cancelled"
    assert r.json()["timings"]["finished_at"] is not None
    again = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert "nothing to cancel" in again.json()["detail"]


def test_metrics_expose_jobs_queue_depth_and_durations(quiet) -> None:
    """Three NAD jobs (1, 2 and 3 shards) submitted to an API nobody works for, the 2-shard one
    cancelled: the gauges must read exactly what that sequence leaves in the database."""
    _, client = quiet
    jobs = [client.post("/v1/jobs/nads", json={**TINY, "seed": s, "shards": s}).json()
            for s in (1, 2, 3)]
    assert client.post(f"/v1/jobs/{jobs[1]['id']}/cancel").status_code == 202
    families = {f.name: f for f in text_string_to_metric_families(
        httpx.get(str(client.base_url) + "/metrics", headers=METRICS_AUTH).text)}
    jobs_gauge = {(s.labels["kind"], s.labels["state"]): s.value
                  for s in families["nads_jobs"].samples}
    nonzero = {k: v for k, v in jobs_gauge.items() if v}
    assert nonzero == {("nads", "queued"): 2.0, ("nads", "cancelled"): 1.0}
    assert ("probe", "queued") in jobs_gauge and ("poison", "succeeded") in jobs_gauge
    shards = {s.labels["state"]: s.value for s in families["nads_shards"].samples}
    assert shards.get("queued", 0) == 1 + 3  # the cancelled job's 2 shards are not queued
    assert sum(shards.values()) == 1 + 2 + 3
    depth = {s.labels["queue"]: s.value for s in families["nads_queue_depth"].samples}
    assert set(depth) == {"gpu", "cpu", "validate"}  # the validation lane has its own
    # no worker connected, so one slot (jobs/dispatch.py): the first job's shard is at the
    # broker, the others are held in the database (a held shard is never sent once cancelled)
    assert sum(depth.values()) == 1
    # nothing has started, so nothing has a duration
    assert families["nads_job_duration_seconds"].type == "summary"
    assert not families["nads_job_duration_seconds"].samples
