"""An upload's file is synced to disk (fsync) off the API's event loop (api/multipart.py): on a
slow disk, other requests are answered while it syncs. The slow disk is played by an fsync that
takes 2 s in the API's process."""

from __future__ import annotations

import io
import os
import threading
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from api.main import create_app
from store.settings import Settings
from tests.support import ServerThread, keyed_client, new_key

SYNC_S = 2.0


@pytest.fixture
def slow_disk_url(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    real = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(SYNC_S)
        real(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    with ServerThread(create_app(settings)) as server:  # in this process: its fsync is slow
        yield server.url


def test_other_requests_are_answered_while_an_upload_syncs(slow_disk_url: str,
                                                           settings: Settings) -> None:
    key = new_key(settings, f"sync-{uuid.uuid4().hex[:6]}")
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 64), dtype=np.float32))
    done: dict[str, float] = {}

    def upload() -> None:
        with keyed_client(slow_disk_url, key, timeout=60) as client:
            t0 = time.monotonic()
            r = client.post("/v1/uploads", data={"kind": "nads"},
                            files={"file": ("n.npy", buf.getvalue())})
            assert r.status_code == 201, r.text
            done["upload_s"] = time.monotonic() - t0

    thread = threading.Thread(target=upload)
    thread.start()
    time.sleep(SYNC_S / 4)  # the upload is in its sync by now
    with keyed_client(slow_disk_url, key, timeout=60) as client:
        t0 = time.monotonic()
        assert client.get("/healthz").status_code == 200
        health_s = time.monotonic() - t0
    thread.join(timeout=60)
    assert done["upload_s"] >= SYNC_S, done  # it did sync (slowly)
    assert health_s < SYNC_S / 2, f"/healthz took {health_s:.2f} s during an upload's sync"
