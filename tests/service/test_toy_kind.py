"""A job kind is one module per layer and a registry line: a toy kind (tests/service/toy_kind:
its engine, its domain side and its worker side, as nadcore/<kind>/, jobs/kinds/<kind>.py and
worker/kinds/<kind>.py hold a kind) is added by its registry line only, `NADS_KIND_MODULES`
(jobs/kinds/__init__.py), with its folder on PYTHONPATH, for an API and a Celery worker started
for it. No file of the repository changes: the test fails if the toy kind needs one to.

Its own Postgres database and a filesystem broker: the session's worker (tests/service), which
does not know the toy kind, must not take its messages or dispatch its shards.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from store.migrate import upgrade
from store.settings import Settings
from tests.fixtures import ThrowawayDatabases
from tests.support import (
    NADS_BIN,
    ROOT,
    celery_worker,
    free_port,
    keyed_client,
    new_key,
    settings_env,
    wait_for_job,
)

pytestmark = pytest.mark.slow

TOY = Path(__file__).with_name("toy_kind")
LAYERS = ["toy_core.py", "toy_jobs.py", "toy_worker.py"]  # nadcore, jobs, worker


@contextlib.contextmanager
def api_process(settings: Settings, env: dict[str, str], port: int
                ) -> Iterator[subprocess.Popen]:
    """The API as a deployment serves it (`uvicorn --factory api.main:create_app`), started
    and not waited for (`wait_healthy`): it starts while the worker does."""
    log = settings.data_dir / "api.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host",
             "127.0.0.1", "--port", str(port),
             "--log-level", "warning"],
            env=settings_env(settings) | env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def test_a_kind_from_one_module_per_layer_runs_through_the_api_and_a_worker(
        databases: ThrowawayDatabases, tmp_path: Path) -> None:
    assert sorted(p.name for p in TOY.glob("*.py")) == LAYERS
    url = databases.create()
    upgrade(url)
    settings = Settings(data_dir=tmp_path, database_url=url, blob_dir=tmp_path / "blobs",
                        progress_interval_s=0.2)  # no broker_url: the filesystem broker
    env = {"NADS_KIND_MODULES": "toy_jobs",  # the registry line
           "PYTHONPATH": os.pathsep.join([str(TOY), str(ROOT)])}
    key = new_key(settings, "toy")
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    with api_process(settings, env, port) as server, \
            celery_worker(settings, queues="gpu,cpu", processes=1, **env), \
            keyed_client(api, key) as client:
        wait_healthy(api, server, tmp_path / "api.log")
        kinds = client.get("/v1/kinds").json()
        assert [k["name"] for k in kinds] == ["nads", "probe", "poison", "toy"]
        toy = kinds[-1]
        assert (toy["unit"], toy["submit_url"]) == ("integers", "/v1/jobs/toy")
        assert [f["name"] for f in toy["figures"]] == ["squares.png"]
        assert "count" in toy["spec_schema"]["properties"]

        # its quota, under the setting it declares (store/settings.py does not name it)
        over = client.post("/v1/jobs/toy", json={"count": 100_001})
        assert over.status_code == 422, over.text
        assert "NADS_MAX_TOY_COUNT" in over.json()["detail"]["msg"]
        assert over.json()["detail"]["limits"] == {"count": 100_000}
        refused = client.post("/v1/jobs/toy", json={"count": 0})
        assert refused.status_code == 422 and "count" in refused.text

        # through the CLI: its --count option set by the kind's cli_options
        cli = subprocess.run([NADS_BIN, "submit", "toy", "--count", "1000", "--shards", "2",
                              "--json", "--url", api, "--key", key],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        sharded = json.loads(cli.stdout)
        whole = client.post("/v1/jobs/toy", json={"count": 30, "whole": True})
        assert whole.status_code == 202, whole.text
        whole = whole.json()
        for submitted, count in ((sharded, 1000), (whole, 30)):
            job = wait_for_job(client, submitted["id"], timeout=120)
            assert job["status"] == "succeeded", job
            assert job["summary"] == {"total": sum(i * i for i in range(count)),
                                      "count": count}
            assert {a["name"] for a in job["artifacts"]} == {"squares.npy", "squares.png"}
        assert sharded["mode"] == "sharded" and whole["mode"] == "sequential"
        listed = client.get("/v1/jobs", params={"kind": "toy"})
        assert listed.status_code == 200 and len(listed.json()["items"]) == 2, listed.text
