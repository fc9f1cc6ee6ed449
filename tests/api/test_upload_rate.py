"""Uploads and uploaded architectures (each a validation the worker runs) are rate-limited per
API key like job submissions, at the default NADS_UPLOAD_RATE_PER_MINUTE (20): exactly 20 of
30 concurrent requests with one key pass, the rest get 429 with Retry-After naming the setting,
nothing of a refused request is stored, and another key has its own budget."""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from api.main import create_app
from store.settings import Settings
from tests.support import ServerThread, keyed_client, new_key


@pytest.fixture(scope="module")
def default_rate_url(settings: Settings) -> Iterator[str]:
    """An API on the suite's database with the default upload rate (the suite's own server
    has it off: its users upload dozens of models a minute)."""
    defaults = settings.model_copy(update={"upload_rate_per_minute":
                                           Settings().upload_rate_per_minute})
    with ServerThread(create_app(defaults)) as server:
        yield server.url


def _client(api_url: str, settings: Settings) -> httpx.Client:
    key = new_key(settings, f"rate-{uuid.uuid4().hex[:6]}")
    return keyed_client(api_url, key, timeout=60)


def _nads_file(seed: int) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).standard_normal((2, 64)).astype(np.float32))
    return buf.getvalue()


def _torchscript_layout() -> bytes:
    """A zip the API takes for a TorchScript archive (the members nadcore.uploaded.archive_format
    requires); no worker runs here to find that it holds no model."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for member in ("code/__torch__.py", "data.pkl", "constants.pkl", "version"):
            z.writestr(f"archive/{member}", "")
    return buf.getvalue()


def test_uploads_and_architectures_share_one_rate_per_key(default_rate_url: str,
                                                          settings: Settings) -> None:
    limit = Settings().upload_rate_per_minute
    assert limit == 20  # the default users get
    with _client(default_rate_url, settings) as carol, \
            _client(default_rate_url, settings) as dave:
        def upload(i: int) -> int:
            if i % 5 == 0:  # every fifth an architecture (of TorchScript's zip layout)
                r = carol.post("/v1/architectures", data={"name": f"a{i}",
                                                          "input_shape": "1,8,8"},
                               files={"file": ("a.pt", _torchscript_layout())})
            else:
                r = carol.post("/v1/uploads", data={"kind": "nads"},
                               files={"file": (f"n{i}.npy", _nads_file(i))})
            if r.status_code == 429:
                assert "NADS_UPLOAD_RATE_PER_MINUTE" in r.json()["detail"], r.text
                assert int(r.headers["retry-after"]) >= 1
            return r.status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(upload, range(limit + 10)))
        assert codes.count(201) == limit and codes.count(429) == 10, codes
        stored = (len(carol.get("/v1/uploads").json()["items"]) +
                  len(carol.get("/v1/architectures").json()["items"]))
        assert stored == limit  # nothing of a refused request was kept
        r = dave.post("/v1/uploads", data={"kind": "nads"},
                      files={"file": ("n.npy", _nads_file(99))})
        assert r.status_code == 201, r.text  # another key, its own budget
