"""Datasets known at admission, with a real worker: a worker reports in its heartbeat row the
named datasets it can read (checked again at every beat); a poison job naming a dataset that no
connected worker reads is refused at submission (422 naming `dataset.name`, the dataset and how
to install it) instead of failing minutes later in the queue; once the operator installs it,
the worker says so within a heartbeat and the same job is accepted and runs.

A service of its own (SQLite, filesystem broker, its own worker): the suite's shared worker
must not be the one that reads, or not, the dataset."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from api.main import create_app
from store.db import session_scope
from store.migrate import upgrade
from store.models import Job, Worker
from store.settings import Settings
from tests.nadcore.poison.test_datasets import write_cifar_miniature
from tests.support import ServerThread, celery_worker, keyed_client, new_key, wait_for_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[httpx.Client, Settings]]:
    data = tmp_path_factory.mktemp("datasets-service")
    settings = Settings(data_dir=data, progress_interval_s=0.2, upload_rate_per_minute=0,
                        catalog_autobuild="", heartbeat_interval_s=1.0)
    upgrade(settings.resolved_database_url)
    key = new_key(settings, f"carol-{uuid.uuid4().hex[:6]}")
    env = {"NADS_CATALOG_AUTOBUILD": "", "NADS_HEARTBEAT_INTERVAL_S": "1.0"}
    with celery_worker(settings, **env), ServerThread(create_app(settings)) as server, \
            keyed_client(server.url, key) as client:
        yield client, settings


def _datasets(settings: Settings) -> list[list[str] | None]:
    with session_scope(settings.resolved_database_url) as session:
        return [w.datasets for w in session.scalars(select(Worker))]


def _wait_for(settings: Settings, wanted: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _datasets(settings) != [wanted]:
        assert time.monotonic() < deadline, _datasets(settings)
        time.sleep(0.2)


def _jobs(settings: Settings) -> int:
    with session_scope(settings.resolved_database_url) as session:
        return session.scalar(select(func.count()).select_from(Job))


def test_a_dataset_no_worker_reads_is_refused_until_one_does(
        service: tuple[httpx.Client, Settings]) -> None:
    client, settings = service
    # NADs for LeNet-shaped carriers: index 0 of 10 classes on 3 channels uses rows 0..1
    nads = np.linalg.qr(np.random.default_rng(0).standard_normal((1024, 4)))[0].T
    buf = io.BytesIO()
    np.save(buf, nads.astype(np.float32))
    r = client.post("/v1/uploads", data={"kind": "nads"},
                    files={"file": ("nads.npy", buf.getvalue(), "application/octet-stream")})
    assert r.status_code == 201, r.text
    body = {"architecture": "lenet", "dataset": {"name": "cifar10", "limit_train": 20},
            "nads": {"upload": r.json()["id"]}, "indices": [0], "training": {"epochs": 1},
            "seed": 0}
    _wait_for(settings, ["digits"])  # the worker's row says what it reads
    before = _jobs(settings)
    r = client.post("/v1/jobs/poison", json=body)
    assert r.status_code == 422, r.text
    [detail] = r.json()["detail"]
    assert detail["field"] == "dataset.name", detail
    msg = detail["msg"]
    assert msg.startswith("dataset.name: 'cifar10': none of the 1 connected worker(s) can read "
                          "it (they read digits); put CIFAR-10 in torchvision's on-disk format "
                          "(cifar-10-batches-py/"), msg
    assert "NADS_DATASETS_DIR, default NADS_DATA_DIR/datasets" in msg
    assert _jobs(settings) == before  # nothing stored
    # The operator installs CIFAR-10 (here a miniature in its on-disk format) while the worker
    # runs: its next heartbeat reports it, and the same job is accepted and runs.
    write_cifar_miniature(settings.resolved_datasets_dir)
    _wait_for(settings, ["digits", "cifar10"])
    r = client.post("/v1/jobs/poison", json=body)
    assert r.status_code == 202, r.text
    job = wait_for_job(client, r.json()["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    summary = job["summary"]
    assert summary["dataset"] == "cifar10" and summary["input_shape"] == [3, 32, 32]
    assert summary["train_size"] == 20 and summary["test_size"] == 8  # the miniature's
