"""The public NAD catalog end to end, with tiny network counts: rounds of ordinary sharded NAD
jobs on the real worker, the stopping rule, reuse of earlier rounds' shards, resumability, and
the public HTTP routes (ETag, 304, Range, Cache-Control, ?k=) read back by the client and CLI.

The arrays must equal `nadcore.run_spec` over the same networks in this process: round 2 merges
round 1's partials with new ones, and nothing of that may show in the result.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from jobs import catalog
from jobs.broker import make_celery
from jobs.state import cancel_job
from nads.client import Client, NadsError
from store.db import session_scope
from store.models import CatalogEntry, Job, Shard, User
from store.settings import Settings
from tests.support import (
    NADS_BIN,
    ROOT,
    clean_env,
    free_port,
    keyed_client,
    nads_serve,
    new_key,
    settings_env,
    wait_for_job,
)

pytestmark = pytest.mark.usefixtures("worker")

# logreg runs to the cap (its gradient covariance is isotropic: stability stays near k/D);
# lenet stops after its first round (a target any estimate reaches).
LENET_N = 40
TINY = {"catalog_networks": 400, "catalog_round_networks": 200, "catalog_shard_networks": 100,
        "catalog_stability_k": 64}


def _settings(settings: Settings, **extra: object) -> Settings:
    return settings.model_copy(update=TINY | extra)


def _wait_ready(client: httpx.Client, names: set[str], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        entries = {e["name"]: e for e in client.get("/v1/catalog").json()}
        seen.append({n: (e["status"], e["progress"]) for n, e in entries.items()})
        if all(entries.get(n, {}).get("status") in ("ready", "failed") for n in names):
            return entries
        assert time.monotonic() < deadline, seen[-5:]
        time.sleep(0.3)


@pytest.fixture(scope="module")
def built(settings: Settings, anonymous: httpx.Client) -> dict:
    """logreg (target 0.95 at k=64: to the cap of 400) and lenet (target 0.05 at k=16: stops
    after its first round of 40)."""
    celery = make_celery(settings)
    with session_scope(settings.resolved_database_url) as session:
        catalog.ensure_entry(session, "lenet", _settings(
            settings, catalog_target_stability=0.05, catalog_stability_k=16,
            catalog_round_networks=40, catalog_shard_networks=20))
        started = catalog.build(session, celery, _settings(settings), ["lenet", "logreg"])
    assert started == {"logreg": "submitted round 1", "lenet": "waiting"}
    building = {e["name"]: e for e in anonymous.get("/v1/catalog").json()}
    assert [building[n]["status"] for n in ("logreg", "lenet")] == ["building", "building"]
    assert list(building) == list(catalog.CATALOG_ARCHITECTURES)  # all five, the paper's order
    r = anonymous.get("/v1/catalog/lenet/nads.npy")
    assert r.status_code == 409 and "building" in r.json()["detail"]
    return _wait_ready(anonymous, {"logreg", "lenet"})


def _jobs(settings: Settings) -> list[Job]:
    with session_scope(settings.resolved_database_url) as session:
        user = session.scalar(select(User).where(User.name == catalog.CATALOG_USER))
        jobs = session.scalars(select(Job).where(Job.user_id == user.id).order_by(Job.pk)).all()
        for job in jobs:
            _ = job.shards
        return list(jobs)


def test_rounds_follow_the_stopping_rule_and_reuse_shards(built: dict, settings: Settings,
                                                          anonymous: httpx.Client) -> None:
    logreg, lenet = built["logreg"], built["lenet"]
    assert logreg["status"] == "ready", logreg
    assert (logreg["networks"], logreg["rounds"], logreg["stopped_early"]) == (400, 2, False)
    assert logreg["stability"] < 0.95 and logreg["progress"] == 1.0
    assert (lenet["status"], lenet["networks"], lenet["rounds"]) == ("ready", LENET_N, 1)
    assert lenet["stability_k"] == 16
    assert lenet["stopped_early"] is True and lenet["stability"] >= 0.05
    for e in (logreg, lenet):
        assert (e["input_shape"], e["method"], e["scale"]) == ([1, 32, 32],
                                                               "finite_difference", 100.0)
        assert e["built_at"] and len(e["sha256"]) == 64
    jobs = _jobs(settings)
    assert [(j.spec["architecture"], j.spec["num_networks"], j.spec["shards"]) for j in jobs] \
        == [("logreg", 200, 2), ("logreg", 400, 4), ("lenet", LENET_N, 2)]
    # Round 2 ran only the new networks: its first two shards are round 1's partials.
    first, second = jobs[0], jobs[1]
    assert [s.attempts for s in second.shards] == [0, 0, 1, 1]
    assert [s.partial_sha256 for s in second.shards[:2]] == \
        [s.partial_sha256 for s in first.shards]
    assert all(j.status == "succeeded" for j in jobs)


def _engine(name: str, n: int):
    """run_spec in this process with one thread, like the test worker (see support.reference)."""
    import torch

    from nadcore import run_spec
    from nadcore.nads.spec import NADSpec

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_spec(NADSpec(architecture=name, num_networks=n))
    finally:
        torch.set_num_threads(threads)


def test_catalog_arrays_equal_the_engine_in_process(built: dict,
                                                    anonymous: httpx.Client) -> None:
    for name, n in (("logreg", 400), ("lenet", LENET_N)):
        expected = _engine(name, n)
        r = anonymous.get(f"/v1/catalog/{name}/nads.npy")
        assert r.status_code == 200
        assert hashlib.sha256(r.content).hexdigest() == built[name]["sha256"]
        np.testing.assert_array_equal(np.load(io.BytesIO(r.content)), expected.nads)
        eig = np.load(io.BytesIO(anonymous.get(f"/v1/catalog/{name}/eigenvalues.npy").content))
        np.testing.assert_array_equal(eig, expected.eigenvalues)
        k = built[name]["stability_k"]
        assert built[name]["stability"] == pytest.approx(expected.stability[k], abs=1e-9)


def test_a_built_entry_exports_to_the_shipped_format_and_verifies(
        built: dict, settings: Settings, anonymous: httpx.Client, tmp_path: Path) -> None:
    """`nads catalog export` of a ready built entry: the served arrays (eigenvalues as
    float32), the first shard's gradients of networks 0..3, provenance; `verify` passes."""
    from nads.catalog_export import export_from_service, verify

    folder = export_from_service(tmp_path, "lenet", settings)
    prov = json.loads((folder / "provenance.json").read_text())
    assert built["lenet"]["origin"] == "built" and built["lenet"]["precision"] == "fp32"
    assert prov["networks"] == LENET_N and prov["precision"] == "fp32"
    assert prov["source"].startswith("catalog entry built by the service")
    assert prov["spec"]["num_networks"] == LENET_N and prov["device"] == "cpu"
    served = np.load(io.BytesIO(anonymous.get("/v1/catalog/lenet/nads.npy").content))
    np.testing.assert_array_equal(np.load(folder / "nads.npy"), served)
    eig = np.load(io.BytesIO(anonymous.get("/v1/catalog/lenet/eigenvalues.npy").content))
    np.testing.assert_array_equal(np.load(folder / "eigenvalues.npy"), eig.astype(np.float32))
    report = verify(folder)
    assert report["ok"] and report["networks"] == 4, report
    r = subprocess.run([NADS_BIN, "catalog", "verify", "--data", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "lenet: ok: 4 networks" in r.stdout, r.stdout + r.stderr


def test_http_caching_slices_and_errors(built: dict, anonymous: httpx.Client) -> None:
    url = "/v1/catalog/logreg/nads.npy"
    full = anonymous.get(url)
    etag = full.headers["etag"]
    assert etag == f'"{built["logreg"]["sha256"]}"'
    assert "public" in full.headers["cache-control"]
    assert anonymous.get(url, headers={"If-None-Match": etag}).status_code == 304
    part = anonymous.get(url, headers={"Range": "bytes=0-127"})
    assert part.status_code == 206 and part.content == full.content[:128]
    nads = np.load(io.BytesIO(full.content))
    cut = anonymous.get(url, params={"k": 32})
    assert cut.status_code == 200 and cut.headers["etag"] == f'"{built["logreg"]["sha256"]}-k32"'
    np.testing.assert_array_equal(np.load(io.BytesIO(cut.content)), nads[:32])
    assert anonymous.get(url, params={"k": 32},
                         headers={"If-None-Match": cut.headers["etag"]}).status_code == 304
    eig = anonymous.get("/v1/catalog/logreg/eigenvalues.npy", params={"k": 5})
    assert np.load(io.BytesIO(eig.content)).shape == (5,)
    too_many = anonymous.get(url, params={"k": nads.shape[0] + 1})
    assert too_many.status_code == 422 and "k:" in too_many.text
    assert str(nads.shape[0]) in too_many.text
    assert anonymous.get(url, params={"k": 0}).status_code == 422
    unknown = anonymous.get("/v1/catalog/alexnet/nads.npy")
    assert unknown.status_code == 404 and "logreg" in unknown.json()["detail"]
    bad_file = anonymous.get("/v1/catalog/logreg/weights.bin")
    assert bad_file.status_code == 404 and "nads.npy" in bad_file.json()["detail"]
    preview = anonymous.get("/v1/catalog/logreg/preview.png")
    assert preview.status_code == 200 and preview.content.startswith(b"\x89PNG")
    assert preview.headers["content-type"] == "image/png" and "etag" in preview.headers


def test_build_again_does_nothing(built: dict, settings: Settings) -> None:
    before = len(_jobs(settings))
    with session_scope(settings.resolved_database_url) as session:
        again = catalog.build(session, make_celery(settings), _settings(settings),
                              ["logreg", "lenet"])
    assert again == {"logreg": "ready", "lenet": "ready"}
    out = subprocess.run([NADS_BIN, "catalog", "build", "--arch", "logreg"], cwd=ROOT,
                         env=settings_env(settings), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "logreg: ready" in out.stdout, out.stderr
    bad = subprocess.run([NADS_BIN, "catalog", "build", "--arch", "alexnet"], cwd=ROOT,
                         env=settings_env(settings), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "arch: unknown 'alexnet'" in bad.stderr
    assert len(_jobs(settings)) == before


def test_a_failed_round_is_resumed_with_its_finished_shards(built: dict, settings: Settings,
                                                            anonymous: httpx.Client) -> None:
    """vgg11 would take hours here; a cancelled round is enough to test the resume path."""
    tiny = _settings(settings, catalog_networks=4, catalog_round_networks=2,
                     catalog_shard_networks=1)
    celery = make_celery(settings)
    url = settings.resolved_database_url
    with session_scope(url) as session:
        assert catalog.build(session, celery, tiny, ["vgg11"]) == {"vgg11": "submitted round 1"}
        entry = session.scalar(select(CatalogEntry).where(CatalogEntry.name == "vgg11"))
        job = session.get(Job, entry.job_pk)
        assert cancel_job(session, job)
        catalog.sweep(session, celery)  # the reconciler's pass marks the entry failed
    listed = {e["name"]: e for e in anonymous.get("/v1/catalog").json()}["vgg11"]
    assert listed["status"] == "failed" and "cancelled" in listed["error"]
    with session_scope(url) as session:
        assert catalog.build(session, celery, tiny, ["vgg11"]) == {"vgg11": "resubmitted round 2"}
        entry = session.scalar(select(CatalogEntry).where(CatalogEntry.name == "vgg11"))
        assert entry.status == "building" and entry.job_pk != job.pk
        count = session.scalar(select(func.count()).select_from(Shard)
                               .where(Shard.job_pk == entry.job_pk))
        assert count == 2
        cancel_job(session, session.get(Job, entry.job_pk))  # leave the worker free
        catalog.sweep(session, celery)
        assert session.scalar(select(CatalogEntry.status)
                              .where(CatalogEntry.name == "vgg11")) == "failed"


def test_client_and_cli_read_the_catalog(built: dict, api_url: str, tmp_path: Path) -> None:
    with Client(api_url, key=None) as client:
        top = client.catalog("logreg", k=16)
        assert top.shape == (16, 1024) and top.dtype == np.float32
        full = client.catalog("lenet")
        np.testing.assert_array_equal(client.catalog("lenet", k=3), full[:3])
        entries = {e.name: e for e in client.catalog_ls()}
        assert entries["lenet"].networks == LENET_N and entries["lenet"].input_shape == (1, 32, 32)
        with pytest.raises(NadsError) as err:
            client.catalog("alexnet")
        assert err.value.status_code == 404
    env = {"PATH": str(Path(sys.executable).parent), "NADS_URL": api_url}
    ls = subprocess.run([NADS_BIN, "catalog", "ls"], env=env, capture_output=True, text=True,
                        timeout=60)
    assert ls.returncode == 0 and "logreg" in ls.stdout and "ready" in ls.stdout, ls.stderr
    out = tmp_path / "lenet8.npy"
    get = subprocess.run([NADS_BIN, "catalog", "get", "lenet", "--k", "8", "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert get.returncode == 0, get.stderr
    np.testing.assert_array_equal(np.load(out), full[:8])


@pytest.fixture(scope="module")
def eve(settings: Settings, api_url: str) -> httpx.Client:
    key = new_key(settings, "eve-catalog")
    with keyed_client(api_url, key) as client:
        yield client


def _run(client: httpx.Client, kind: str, body: dict) -> dict:
    # tiny probes: accepted although they cannot tell a direction from chance
    params = {"accept_underpowered": "true"} if kind == "probe" else None
    r = client.post(f"/v1/jobs/{kind}", json=body, params=params)
    assert r.status_code == 202, r.text
    job = wait_for_job(client, r.json()["id"], timeout=180)
    assert job["status"] == "succeeded", job["error"]
    return job


def test_probe_and_poison_jobs_take_their_nads_from_the_catalog(
        built: dict, eve: httpx.Client, anonymous: httpx.Client) -> None:
    """`{"catalog": "<arch>"}` as the NAD source: any user, no job of theirs needed."""
    catalog_nads = np.load(io.BytesIO(anonymous.get("/v1/catalog/logreg/nads.npy").content))
    probe = {"architecture": "logreg", "input_shape": [1, 32, 32],
             "directions": {"kind": "nad", "catalog": "logreg", "indices": [0, 5]},
             "data": {"num_train": 64, "num_test": 64}, "training": {"epochs": 1}}
    job = _run(eve, "probe", probe)
    got = eve.get(f"/v1/jobs/{job['id']}/artifacts/directions.npy")
    np.testing.assert_array_equal(np.load(io.BytesIO(got.content)), catalog_nads[[0, 5]])
    poison = {"architecture": "lenet", "dataset": {"name": "digits", "limit_train": 100,
                                                   "limit_test": 50},
              "nads": {"catalog": "lenet"}, "indices": [0], "training": {"epochs": 1}}
    assert _run(eve, "poison", poison)["summary"] is not None
    refused = [
        ("probe", probe | {"directions": probe["directions"] | {"catalog": "vgg11"}},
         "directions.catalog", "'vgg11' is not a ready catalog entry"),
        ("probe", probe | {"directions": probe["directions"] | {"indices": [400]}},
         "directions.indices", "the catalog's 'logreg' has"),
        ("probe", probe | {"directions": probe["directions"] | {"job": "x"}},
         "directions", "not both"),
        ("poison", poison | {"nads": {"catalog": "densenet121"}}, "nads.catalog", "ready: "),
        ("poison", poison | {"indices": [LENET_N]}, "indices", "the catalog's 'lenet' has"),
    ]
    for kind, body, field, words in refused:
        r = eve.post(f"/v1/jobs/{kind}", json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in r.text and words in r.text, r.text


@pytest.mark.slow
def test_a_fresh_nads_serve_builds_its_autobuild_list(tmp_path: Path) -> None:
    """First start, embedded (SQLite, filesystem broker): logreg is built in the background
    and served; a bad NADS_CATALOG_AUTOBUILD is refused with its name."""
    bad = subprocess.run([NADS_BIN, "serve", "--port", str(free_port())], cwd=tmp_path,
                         env=clean_env(NADS_CATALOG_AUTOBUILD="logreg,alexnet"),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "NADS_CATALOG_AUTOBUILD" in bad.stderr
    assert "'alexnet'" in bad.stderr
    env = clean_env(NADS_CATALOG_AUTOBUILD="logreg", NADS_CATALOG_NETWORKS="400",
                    NADS_CATALOG_ROUND_NETWORKS="200", NADS_CATALOG_SHARD_NETWORKS="100",
                    NADS_CATALOG_SHIPPED_DIR="")  # nothing shipped: it must build
    with nads_serve(tmp_path, env) as serve:
        assert "catalog: building logreg" in serve.banner, serve.banner
        with httpx.Client(base_url=serve.url, timeout=30) as client:
            entries = _wait_ready(client, {"logreg"}, timeout=180)
            assert entries["logreg"]["status"] == "ready", entries
            assert (entries["logreg"]["networks"], entries["logreg"]["rounds"]) == (400, 2)
            r = client.get("/v1/catalog/logreg/nads.npy", params={"k": 4})
            assert r.status_code == 200 and np.load(io.BytesIO(r.content)).shape == (4, 1024)
    assert serve.proc.returncode == 0
