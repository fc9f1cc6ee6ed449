"""Isolation between users, driven by the app's own route table.

Every route of the app must be in exactly one of four tables below: PUBLIC (no key, no user
data), OPERATOR (the operator's token, not a user's key: service-wide figures), COLLECTIONS
(keyed, no resource in the path: lists and submissions) or OWNED (keyed, with a resource of the
caller in the path). A route added later and in none of them fails
`test_every_route_is_in_a_table`, so new routes are forced into this file. Each OWNED route is
called by Bob on Alice's resource: 404 exactly like a missing one, nothing of Alice's in the
answer, nothing of Alice's changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from api.main import create_app
from store.auth import CATALOG_USER, ReservedUserError, create_key
from store.db import session_scope
from store.settings import Settings
from tests.support import METRICS_AUTH, new_key, wait_for_job

pytestmark = pytest.mark.usefixtures("worker")

# Public: no key, and nothing that belongs to a user (the catalog is the system's).
PUBLIC = {
    ("GET", "/openapi.json"), ("HEAD", "/openapi.json"), ("GET", "/docs"), ("HEAD", "/docs"),
    ("GET", "/docs/oauth2-redirect"), ("HEAD", "/docs/oauth2-redirect"), ("GET", "/redoc"),
    ("GET", "/docs/assets/{name}"),  # Swagger UI's and ReDoc's files, served offline
    ("HEAD", "/redoc"), ("GET", "/healthz"), ("GET", "/readyz"),
    ("GET", "/v1/catalog"), ("GET", "/v1/catalog/{arch}"), ("GET", "/v1/catalog/{arch}/{name}"),
    ("GET", "/v1/kinds"),  # the registered job kinds: describes the service, no user data
    ("HEAD", "/v1/catalog/{arch}/{name}"),
    # The web page: HTML and static files; its data is fetched by JS with the user's key.
    ("GET", "/"), ("GET", "/web"), ("GET", "/web/{name}"), ("GET", "/favicon.ico"),
    ("GET", "/v1/local-proof"),  # nads serve proves it holds the local key (nads/local_key.py)
}
# The operator's: every user's jobs counted together; NADS_METRICS_TOKEN, no API key.
OPERATOR = {("GET", "/metrics")}
# Keyed, no resource in the path: Bob's listing must not show Alice's resources.
COLLECTIONS = {
    ("GET", "/v1/jobs"), ("POST", "/v1/jobs/nads"), ("POST", "/v1/jobs/probe"),
    ("POST", "/v1/jobs/poison"), ("GET", "/v1/uploads"), ("POST", "/v1/uploads"),
    ("GET", "/v1/architectures"), ("POST", "/v1/architectures"),
}
# Keyed, a resource in the path -> (the resource Bob aims at, the path Alice reads it back at).
OWNED = {
    ("GET", "/v1/jobs/{job_id}"): ("job", "/v1/jobs/{job_id}"),
    ("POST", "/v1/jobs/{job_id}/cancel"): ("live_job", "/v1/jobs/{job_id}"),
    ("DELETE", "/v1/jobs/{job_id}"): ("job", "/v1/jobs/{job_id}"),
    ("GET", "/v1/jobs/{job_id}/artifacts/{name}"): ("job", "/v1/jobs/{job_id}"),
    ("HEAD", "/v1/jobs/{job_id}/artifacts/{name}"): ("job", "/v1/jobs/{job_id}"),
    ("GET", "/v1/uploads/{upload_id}"): ("upload", "/v1/uploads/{upload_id}"),
    ("DELETE", "/v1/uploads/{upload_id}"): ("upload", "/v1/uploads/{upload_id}"),
    ("GET", "/v1/architectures/{architecture_id}"):
        ("architecture", "/v1/architectures/{architecture_id}"),
    ("DELETE", "/v1/architectures/{architecture_id}"):
        ("architecture", "/v1/architectures/{architecture_id}"),
}
LISTINGS = {"/v1/jobs": "job", "/v1/uploads": "upload", "/v1/architectures": "architecture"}

TINY = {"architecture": "logreg", "input_shape": [1, 4, 4], "num_networks": 8, "seed": 77,
        "shards": 2}
LONG = {"architecture": "logreg", "input_shape": [1, 16, 16], "num_networks": 200_000,
        "seed": 78, "shards": 1}


def route_table(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, included routers flattened."""
    found: set[tuple[str, str]] = set()

    def visit(route: object) -> None:
        contexts = getattr(route, "effective_route_contexts", None)  # included router
        if contexts is not None:
            for context in contexts():
                visit(context)
            return
        methods = getattr(route, "methods", None)
        if methods is None:
            methods = getattr(getattr(route, "original_route", None), "methods", None) or ()
        for method in methods:
            found.add((method, route.path))

    for route in app.routes:
        visit(route)
    return found


@pytest.fixture(scope="module")
def routes(settings: Settings) -> set[tuple[str, str]]:
    return route_table(create_app(settings))


class Resources:
    """Alice's resources, with the strings that must never reach Bob."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self.secrets: list[str] = []


@pytest.fixture(scope="module")
def alices(alice: httpx.Client, routes: set[tuple[str, str]]) -> Iterator[Resources]:
    res = Resources()
    job = alice.post("/v1/jobs/nads", json=TINY).json()
    live = alice.post("/v1/jobs/nads", json=LONG).json()
    res.ids["live_job"] = live["id"]
    buf = io.BytesIO()
    np.save(buf, np.eye(3, 16, dtype=np.float32))
    up = alice.post("/v1/uploads", data={"kind": "nads"},
                    files={"file": (f"alice-{uuid.uuid4().hex}.npy", buf.getvalue())})
    assert up.status_code == 201, up.text
    res.ids["upload"] = up.json()["id"]
    res.secrets += [up.json()["sha256"], up.json()["filename"]]
    if ("POST", "/v1/architectures") in routes:
        res.ids["architecture"] = _upload_architecture(alice, res)
    done = wait_for_job(alice, job["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    res.ids["job"] = done["id"]
    res.secrets += [a["sha256"] for a in done["artifacts"]]
    yield res
    alice.post(f"/v1/jobs/{live['id']}/cancel")


def _upload_architecture(alice: httpx.Client, res: Resources) -> str:
    import torch

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(),
                                                         torch.nn.Linear(16, 1))), buf)
    name = f"alice-net-{uuid.uuid4().hex[:8]}"
    r = alice.post("/v1/architectures", data={"name": name, "input_shape": "1,4,4"},
                   files={"file": ("alice.pt", buf.getvalue())})
    assert r.status_code == 201, r.text
    res.secrets += [name, r.json()["sha256"]]
    return r.json()["id"]


def _url(path: str, resource_id: str) -> str:
    names = {"job_id": resource_id, "upload_id": resource_id, "architecture_id": resource_id,
             "name": "nads.npy"}
    return path.format(**names)


def test_every_route_is_in_a_table(routes: set[tuple[str, str]]) -> None:
    tables = PUBLIC | OPERATOR | COLLECTIONS | set(OWNED)
    missing = sorted(routes - tables)
    assert not missing, f"routes in no isolation table (add them to this file): {missing}"
    absent = sorted(tables - routes)
    print(f"\nisolation: {len(routes)} routes: {len(routes & PUBLIC)} public, "
          f"{len(routes & COLLECTIONS)} keyed collections, {len(routes & set(OWNED))} keyed "
          f"with a resource; table entries with no route (yet): {absent}")
    assert not (PUBLIC & COLLECTIONS) and not (PUBLIC & set(OWNED))
    assert not (OPERATOR & (PUBLIC | COLLECTIONS | set(OWNED)))
    for method, path in routes - PUBLIC - OPERATOR:
        assert ((method, path) in OWNED) == ("{" in path), (method, path)


@pytest.mark.parametrize(("method", "path"), sorted(OWNED))
def test_bob_cannot_read_change_or_download_alices(
    method: str, path: str, alice: httpx.Client, bob: httpx.Client, alices: Resources,
    routes: set[tuple[str, str]]
) -> None:
    # a route listed here that the app lacks is a stale table, not something to skip
    assert (method, path) in routes, f"{method} {path} is in OWNED but not in the app"
    kind, readback = OWNED[(method, path)]
    resource_id = alices.ids[kind]
    before = alice.get(_url(readback, resource_id))
    assert before.status_code == 200, before.text

    answer = bob.request(method, _url(path, resource_id))
    assert answer.status_code == 404, (method, path, answer.status_code, answer.text)
    # The same answer as for a resource that does not exist at all.
    missing = bob.request(method, _url(path, uuid.uuid4().hex))
    assert missing.status_code == 404
    leaked = answer.text + json.dumps(dict(answer.headers))
    for secret in alices.secrets:
        assert secret not in leaked, (method, path, secret)

    after = alice.get(_url(readback, resource_id))
    assert after.status_code == 200
    if kind == "live_job":  # running: only its not being cancelled is stable
        assert after.json()["status"] != "cancelled"
    elif kind == "architecture":  # the worker may be validating it meanwhile
        stable = ("id", "name", "filename", "input_shape", "sha256", "size")
        assert {k: after.json().get(k) for k in stable} == {
            k: before.json().get(k) for k in stable}
    else:
        assert after.json() == before.json()


def test_keyed_routes_refuse_anonymous_callers(anonymous: httpx.Client,
                                               routes: set[tuple[str, str]],
                                               alices: Resources) -> None:
    keyed = [(m, p) for m, p in routes - PUBLIC - OPERATOR]
    assert keyed
    for method, path in keyed:
        kind = OWNED.get((method, path), ("job", ""))[0]
        r = anonymous.request(method, _url(path, alices.ids.get(kind, "x")))
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        for secret in alices.secrets:
            assert secret not in r.text


def test_bobs_listings_show_none_of_alices(bob: httpx.Client, alices: Resources,
                                          routes: set[tuple[str, str]]) -> None:
    for path, kind in LISTINGS.items():
        if ("GET", path) not in routes:
            continue
        r = bob.get(path)
        assert r.status_code == 200, r.text
        ids = {item["id"] for item in r.json()["items"]}
        assert alices.ids.get(kind) not in ids and alices.ids.get(f"live_{kind}") not in ids
        for secret in alices.secrets:
            assert secret not in r.text


def test_operator_routes_refuse_every_user_key(anonymous: httpx.Client, alice: httpx.Client,
                                               routes: set[tuple[str, str]]) -> None:
    """Service-wide metrics: not for anonymous callers nor for any user's API key (401 naming
    the setting), only for the operator's token (what Prometheus sends)."""
    assert routes >= OPERATOR
    for method, path in OPERATOR:
        for client in (anonymous, alice):
            r = client.request(method, path)
            assert r.status_code == 401 and "NADS_METRICS_TOKEN" in r.text, (path, r.text)
            assert "nads_jobs" not in r.text
        r = anonymous.request(method, path, headers=METRICS_AUTH)
        assert r.status_code == 200 and "nads_jobs{" in r.text, r.text


def test_public_routes_answer_without_a_key(anonymous: httpx.Client,
                                            routes: set[tuple[str, str]]) -> None:
    for method, path in sorted(PUBLIC & routes):
        if "{" in path:
            continue
        r = anonymous.request(method, path)
        assert r.status_code != 401, (method, path, r.text)


def test_keys_are_stored_only_as_hashes(settings: Settings) -> None:
    """No table holds the key in clear: every text cell of the database is searched."""
    key = new_key(settings, f"hashed-{uuid.uuid4().hex[:6]}")
    with session_scope(settings.resolved_database_url) as session:
        tables = session.execute(text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )).scalars().all()
        assert "api_keys" in tables
        for table in tables:
            hits = session.execute(
                text(f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE :needle'),
                {"needle": f"%{key[len('nads_'):]}%"}).scalar_one()
            assert hits == 0, f"the key is stored in clear in {table}"
        stored = session.execute(text("SELECT key_hash FROM api_keys")).scalars().all()
    assert hashlib.sha256(key.encode()).hexdigest() in stored


def test_no_key_can_be_made_for_the_catalogs_system_user(settings: Settings) -> None:
    """Its holder would see and could cancel the catalog's build jobs."""
    with session_scope(settings.resolved_database_url) as session:
        with pytest.raises(ReservedUserError, match="catalog"):
            create_key(session, CATALOG_USER)
        assert session.execute(text("SELECT count(*) FROM api_keys k JOIN users u ON "
                                    "u.id = k.user_id WHERE u.name = 'catalog'")).scalar_one() == 0
