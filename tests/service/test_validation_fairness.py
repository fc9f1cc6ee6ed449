"""The validation lane is fair between users (jobs/dispatch.py, `dispatch_validations`), through
the API to a real lane worker: user A uploads a burst of archives, user B one after them; B's
validation finishes before most of A's, where a first-in-first-out lane validated it last.

A service of its own (SQLite, the embedded filesystem broker, a lane worker of one process
that takes only `validate`, as `nads serve` and docker-compose's `validator` run it): the
suite's shared worker takes shards too, and other tests' uploads must not share the lane.

The lane's validation time limit is short here (RUNAWAY_LIMIT_S), so that an upload that runs
forever is killed at it without holding a core for the default's three minutes; the lane then
validates the next upload.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from torch import nn

from api.main import create_app
from store.migrate import upgrade
from store.settings import Settings
from tests.bad_models import Forever, Raises, scripted_bytes
from tests.support import ServerThread, celery_worker, keyed_client, new_key

pytestmark = pytest.mark.slow
BURST = 5
RUNAWAY_LIMIT_S = 20.0  # validations of the tiny archives here take a second or two


@pytest.fixture(scope="module")
def lane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, ...]]:
    data = tmp_path_factory.mktemp("validation-lane")
    settings = Settings(data_dir=data, upload_rate_per_minute=0, catalog_autobuild="",
                        heartbeat_interval_s=1.0,
                        architecture_validation_timeout_s=RUNAWAY_LIMIT_S)
    upgrade(settings.resolved_database_url)
    keys = [new_key(settings, f"{who}-{uuid.uuid4().hex[:6]}") for who in ("a", "b")]
    env = {"NADS_CATALOG_AUTOBUILD": "", "NADS_HEARTBEAT_INTERVAL_S": "1.0"}
    with celery_worker(settings, queues="validate", processes=1, **env), \
            ServerThread(create_app(settings)) as server:
        clients = [keyed_client(server.url, key, timeout=60) for key in keys]
        yield tuple(clients)
        for client in clients:
            client.close()


def upload(client: httpx.Client, archive: bytes, name: str) -> str:
    r = client.post("/v1/architectures", data={"name": name, "input_shape": "1,4,4"},
                    files={"file": (f"{name}.pt", archive)})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "validating"
    return r.json()["id"]


def finish_order(clients: tuple[httpx.Client, ...], ids: set[str], timeout: float) -> list[str]:
    """The architectures in the order their validations ended (seen every 0.2 s)."""
    order: list[str] = []
    deadline = time.monotonic() + timeout
    while len(order) < len(ids):
        assert time.monotonic() < deadline, f"validated so far: {order} of {sorted(ids)}"
        for client in clients:
            for row in client.get("/v1/architectures").json()["items"]:
                if row["id"] in ids and row["status"] != "validating" and row["id"] not in order:
                    order.append(row["id"])
        time.sleep(0.2)
    return order


def test_another_users_upload_is_validated_before_most_of_a_burst(
        lane: tuple[httpx.Client, httpx.Client]) -> None:
    a, b = lane
    archive = scripted_bytes(Raises())  # rejected in seconds: a sandbox run like any other
    burst = [upload(a, archive, f"burst{i}") for i in range(BURST)]
    single = upload(b, archive, "single")
    order = finish_order(lane, {*burst, single}, timeout=120 + 40 * BURST)
    after = order[order.index(single) + 1:]
    print(f"\nvalidation lane: B's upload finished {order.index(single) + 1} of "
          f"{len(order)}, before {len(after)} of A's {BURST}")
    assert len(after) > BURST // 2, order  # FIFO: B's was last, before none


def test_a_runaway_validation_is_killed_at_the_limit_and_the_lane_goes_on(
        lane: tuple[httpx.Client, httpx.Client]) -> None:
    a, _ = lane
    t0 = time.monotonic()
    runaway = upload(a, scripted_bytes(Forever()), "forever")
    assert finish_order(lane, {runaway}, timeout=RUNAWAY_LIMIT_S + 90) == [runaway]
    elapsed = time.monotonic() - t0
    row = a.get(f"/v1/architectures/{runaway}").json()
    assert row["status"] == "rejected", row
    assert f"time limit of {RUNAWAY_LIMIT_S:.0f} s" in row["reason"], row
    assert RUNAWAY_LIMIT_S <= elapsed < RUNAWAY_LIMIT_S + 60, elapsed  # killed at the limit
    # the lane worker killed the runaway child, not itself: it validates the next upload
    good = upload(a, scripted_bytes(nn.Sequential(nn.Flatten(), nn.Linear(16, 1))), "ok")
    assert finish_order(lane, {good}, timeout=90) == [good]
    assert a.get(f"/v1/architectures/{good}").json()["status"] == "ready"
