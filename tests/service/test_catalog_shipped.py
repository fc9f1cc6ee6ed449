"""Catalog entries shipped with the repository: served ready by a fresh `nads serve` without any
worker, kept apart from built entries, replaced only with --replace, refused when a file does
not match its sha256."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from jobs import catalog
from jobs.broker import make_celery
from jobs.shipped import install_shipped, shipped_entries
from nads.catalog_export import export_direct
from store.db import session_scope
from store.migrate import upgrade
from store.models import CatalogEntry, Job
from store.settings import SHIPPED_CATALOG_DIR, Settings
from tests.support import clean_env, keyed_client, nads_serve


@pytest.fixture(scope="module")
def tiny_shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shipped-format logreg entry of 12 networks (the engine, in this process)."""
    root = tmp_path_factory.mktemp("shipped")
    export_direct(root, "logreg", networks=12, device="cpu", check_networks=2)
    return root


def _embedded(tmp_path: Path, shipped: Path | None) -> Settings:
    """An embedded service of its own (SQLite, filesystem broker): nothing shared with the
    other tests' catalog rows."""
    settings = Settings(data_dir=tmp_path / "var", catalog_shipped_dir=shipped,
                        catalog_networks=40, catalog_round_networks=20,
                        catalog_shard_networks=10)
    settings.data_dir.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    return settings


def _entry(settings: Settings, name: str) -> CatalogEntry:
    with session_scope(settings.resolved_database_url) as session:
        entry = session.scalar(select(CatalogEntry).where(CatalogEntry.name == name))
        session.expunge(entry)
        return entry


def test_install_is_idempotent_keeps_built_entries_and_replace_rebuilds(
        tiny_shipped: Path, tmp_path: Path) -> None:
    settings = _embedded(tmp_path, tiny_shipped)
    url = settings.resolved_database_url
    with session_scope(url) as session:
        assert install_shipped(session, settings) == {"logreg": "installed"}
        assert install_shipped(session, settings) == {"logreg": "unchanged"}
    entry = _entry(settings, "logreg")
    prov = json.loads((tiny_shipped / "logreg" / "provenance.json").read_text())
    assert (entry.status, entry.origin, entry.job_pk, entry.networks) == ("ready", "shipped",
                                                                          None, 12)
    assert entry.provenance == prov and entry.sha256 == prov["files"]["nads.npy"]["sha256"]
    assert entry.files == {n: f["sha256"] for n, f in prov["files"].items()}
    celery = make_celery(settings)
    with session_scope(url) as session:
        # a build leaves the shipped entry alone ...
        done = catalog.build(session, celery, settings, ["logreg"])
        assert done == {"logreg": "ready (shipped with the repository; --replace recomputes it)"}
        assert session.scalar(select(Job.pk)) is None
        # ... unless asked to replace it: a new build from scratch with this service's settings
        done = catalog.build(session, celery, settings, ["logreg"], replace=True)
        assert done == {"logreg": "submitted round 1"}
    entry = _entry(settings, "logreg")
    assert (entry.status, entry.origin, entry.files, entry.provenance) == ("building", "built",
                                                                           None, None)
    assert entry.spec["num_networks"] == 40 and entry.rounds == 1 and entry.job_pk is not None
    with session_scope(url) as session:
        assert install_shipped(session, settings) == {"logreg": "kept built"}
    assert _entry(settings, "logreg").origin == "built"


def test_a_file_that_does_not_match_its_sha256_is_not_installed(
        tiny_shipped: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(tiny_shipped, bad)
    path = bad / "logreg" / "eigenvalues.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    settings = _embedded(tmp_path, bad)
    with session_scope(settings.resolved_database_url) as session:
        done = install_shipped(session, settings)
        assert done["logreg"].startswith("error: logreg: eigenvalues.npy has sha256"), done
        assert session.scalar(select(CatalogEntry)) is None


@pytest.mark.slow
def test_a_fresh_nads_serve_serves_every_shipped_entry_without_computing(tmp_path: Path
                                                                        ) -> None:
    """The repository's catalog_data/, served by a first start with no worker at all (nothing
    can compute), ready at once, with provenance, files equal to the shipped bytes."""
    shipped = {e.name: e for e in shipped_entries(SHIPPED_CATALOG_DIR)}
    assert {"logreg", "lenet"} <= set(shipped)
    with nads_serve(tmp_path, clean_env(), "--no-worker") as serve:
        assert f"catalog: serving {', '.join(shipped)} as shipped" in serve.banner, \
            serve.banner
        assert "building" not in serve.banner, serve.banner
        with httpx.Client(base_url=serve.url, timeout=30) as client:
            entries = {e["name"]: e for e in client.get("/v1/catalog").json()}
            for name, item in shipped.items():
                e = entries[name]
                assert (e["status"], e["origin"], e["progress"]) == ("ready", "shipped", 1.0)
                assert e["provenance"] == item.provenance and e["job_id"] is None
                assert e["precision"] == item.provenance["precision"]
                networks = item.provenance["networks"]
                assert e["networks"] == networks and "shipped with the repository" in e["message"]
                # fewer than the paper's 10,000 (a background CPU build): labelled as such
                assert e["full_build_pending"] is (networks < 10_000)
                assert ("a 10,000-network build is pending" in e["message"]) is (networks < 10_000)
                assert f"{item.provenance['stability']['64']:.3f} at k=64" in e["message"]
                for file in ("nads.npy", "eigenvalues.npy", "eval_point.npy", "preview.png"):
                    r = client.get(f"/v1/catalog/{name}/{file}")
                    assert r.status_code == 200, (file, r.text)
                    assert hashlib.sha256(r.content).hexdigest() == \
                        item.files[file]["sha256"], file
                    assert r.headers["etag"] == f'"{item.files[file]["sha256"]}"'
                r = client.get(f"/v1/catalog/{name}/nads.npy", params={"k": 8})
                top = np.load(io.BytesIO(r.content))
                assert top.shape == (8, 1024)
                assert np.array_equal(top, np.load(SHIPPED_CATALOG_DIR / name / "nads.npy")[:8])
        # a shipped entry (no job behind it) is a NAD source for probe and poison jobs
        user = keyed_client(serve.url, serve.key)
        probe = {"architecture": "lenet", "input_shape": [1, 32, 32],
                 "directions": {"kind": "nad", "catalog": "lenet", "indices": [0, 1023]}}
        poison = {"architecture": "lenet", "dataset": {"name": "digits"},
                  "nads": {"catalog": "lenet"}, "indices": [0]}
        for kind, body in (("probe", probe), ("poison", poison)):
            r = user.post(f"/v1/jobs/{kind}", json=body)
            assert r.status_code == 202, (kind, r.text)
        r = user.post("/v1/jobs/probe", json=probe | {"directions": probe["directions"]
                                                       | {"indices": [1024]}})
        assert r.status_code == 422 and "the catalog's 'lenet' has 1024 NADs" in r.text, r.text
        user.close()
    # a second start finds them installed and serves them again
    with nads_serve(tmp_path, clean_env(), "--no-worker") as serve, \
            httpx.Client(base_url=serve.url, timeout=30) as client:
        listed = {e["name"]: e["status"] for e in client.get("/v1/catalog").json()}
        assert {n: s for n, s in listed.items() if s != "absent"} == \
            dict.fromkeys(shipped, "ready")
