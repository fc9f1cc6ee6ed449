"""The limits other tests shrink, at the defaults users get.

test_limits.py, test_size_bounds.py and tests/service/test_poison_e2e.py run servers with small
body, upload and dataset limits so that their payloads stay small. Here one server runs with
every limit at its default (its own database, the session's Redis broker) and each limit is
checked at its edge: the value is the documented one (docs/service.md), a request announcing
one byte over it is refused before its body is sent, and a streamed body is refused once it
passes the limit, not after its end. Nothing here pushes more than the limit plus one chunk.
"""

from __future__ import annotations

import io
import json
import socket
import uuid
import zipfile
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from api.main import create_app
from jobs.kinds import KINDS
from store.migrate import upgrade
from store.settings import Settings
from tests.fixtures import ThrowawayDatabases
from tests.support import ServerThread, keyed_client, new_key

pytestmark = pytest.mark.slow

TINY = {"architecture": "logreg", "input_shape": [1, 4, 4], "num_networks": 8}
CHUNK = 1 << 20

# docs/service.md, "Settings"
DOCUMENTED = {"max_body_bytes": 32 * 2**20, "max_upload_bytes": 200_000_000,
              "max_dataset_decompressed_bytes": 2**30, "max_architecture_bytes": 50_000_000,
              "max_memory_bytes": 16 * 2**30}


@pytest.fixture(scope="module")
def defaults(databases: ThrowawayDatabases, broker_url: str,
             tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Every limit at its default; only where the data lives is set."""
    url = databases.create()
    upgrade(url)
    data = tmp_path_factory.mktemp("defaults")
    return Settings(data_dir=data, database_url=url, broker_url=broker_url)


@pytest.fixture(scope="module")
def server(defaults: Settings) -> Iterator[str]:
    with ServerThread(create_app(defaults)) as s:
        yield s.url


@pytest.fixture()
def client(defaults: Settings, server: str) -> Iterator[httpx.Client]:
    key = new_key(defaults, f"d-{uuid.uuid4().hex[:8]}")
    with keyed_client(server, key, timeout=120) as c:
        yield c


def test_the_limits_are_the_documented_defaults(defaults: Settings) -> None:
    quotas = {q.name: q for kind in KINDS.values() for q in kind.quotas}  # declared by kinds
    for name, value in DOCUMENTED.items():
        got = defaults.quota(name, quotas[name].default) if name in quotas else \
            getattr(defaults, name)
        assert got == value, name


def _announce(url: str, path: str, key: str, length: int, content_type: str) -> bytes:
    """Sends only the headers of a request announcing `length` bytes; returns the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                   f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer or b"}" not in answer:
            data = s.recv(65536)
            if not data:
                break
            answer += data
        return answer


def _key(client: httpx.Client) -> str:
    return client.headers["Authorization"].split()[-1]


def test_a_body_one_byte_over_32_mib_is_refused_before_it_is_read(
        client: httpx.Client, server: str) -> None:
    limit = DOCUMENTED["max_body_bytes"]
    answer = _announce(server, "/v1/jobs/nads", _key(client), limit + 1, "application/json")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"33,554,432 bytes" in answer and b"NADS_MAX_BODY_BYTES" in answer
    # Exactly the limit: read, parsed and accepted (a spec padded with blanks).
    text = json.dumps(TINY).encode()
    exact = text + b" " * (limit - len(text))
    r = client.post("/v1/jobs/nads", content=exact, headers={"content-type": "application/json"})
    assert r.status_code == 202, r.text
    # Chunked, no Content-Length: refused once it passes the limit, not after its end.
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(3 * limit // CHUNK):
            sent += CHUNK
            yield b" " * CHUNK
    r = client.post("/v1/jobs/nads", content=chunks(),
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and "NADS_MAX_BODY_BYTES" in r.text, r.text
    assert sent < 3 * limit


def _multipart(fields: dict[str, str], filename: str, size: int, sent: list[int]
               ) -> Iterator[bytes]:
    """A multipart form whose file part is `size` zero bytes, generated chunk by chunk."""
    for name, value in fields.items():
        yield (f'--b0undary\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
               f'{value}\r\n').encode()
    yield (f'--b0undary\r\nContent-Disposition: form-data; name="file"; '
           f'filename="{filename}"\r\n\r\n').encode()
    yield b"\x93NUMPY"
    left = size - 6
    while left > 0:
        n = min(CHUNK, left)
        sent[0] += n
        left -= n
        yield bytes(n)
    yield b"\r\n--b0undary--\r\n"


@pytest.mark.parametrize(("path", "fields", "setting"), [
    ("/v1/uploads", {"kind": "nads"}, "max_upload_bytes"),
    ("/v1/architectures", {"name": "big", "input_shape": "1,4,4"}, "max_architecture_bytes"),
])
def test_an_upload_one_byte_over_the_default_is_refused_early_and_leaves_nothing(
        client: httpx.Client, server: str, defaults: Settings, path: str, fields: dict,
        setting: str) -> None:
    limit = DOCUMENTED[setting]
    env = f"NADS_{setting.upper()}"
    # Announced over the limit (file plus 64 KiB of framing): refused from the header alone.
    answer = _announce(server, path, _key(client), limit + 64 * 1024 + 1,
                       "multipart/form-data; boundary=b0undary")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert f"{limit:,} bytes".encode() in answer and env.encode() in answer, answer[-300:]
    # Streamed with no Content-Length: the file is counted as it is written and refused past
    # the limit (one chunk over it here), nothing of it kept.
    sent = [0]
    r = client.post(path, content=_multipart(fields, "big.npy", limit + CHUNK, sent),
                    headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    assert r.status_code == 413, r.text
    assert f"{limit:,} bytes" in r.text and env in r.text, r.text
    tmp = defaults.resolved_blob_dir / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []


def _declared_npz(n: int) -> bytes:
    """A .npz whose headers declare n 32 x 32 uint8 images and n int64 labels over a few bytes
    of data: the limit is judged from what the headers declare, before anything is inflated."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, dtype, shape in (("x", "|u1", (n, 32, 32, 1)), ("y", "<i8", (n,))):
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": dtype, "fortran_order": False, "shape": shape})
            zf.writestr(f"{name}.npy", header.getvalue() + bytes(64))
    return buf.getvalue()


def test_a_dataset_declaring_past_a_gib_is_refused(client: httpx.Client) -> None:
    """2**20 + 1 images of 1,024 bytes: one image past the 1 GiB default once decompressed,
    refused naming the limit before the members are compared with their headers (the same
    archive with an honest member, at a 10 MB limit: test_size_bounds.py)."""
    r = client.post("/v1/uploads", data={"kind": "dataset"},
                    files={"file": ("big.npz", _declared_npz(2**20 + 1))})
    assert r.status_code == 413, r.text
    assert "1,073,741,824" in r.text and "NADS_MAX_DATASET_DECOMPRESSED_BYTES" in r.text, r.text


def test_a_spec_over_the_default_memory_quota_is_refused(client: httpx.Client) -> None:
    """16 GiB: the gradients of 10,000 logistic regressions on 3 x 512 x 512 inputs (float32,
    kept for the low-rank decomposition) are 31 GB; the same spec with 1,000 networks (3 GB)
    passes."""
    body = {"architecture": "logreg", "input_shape": [3, 512, 512], "num_networks": 10_000,
            "method": "autograd"}
    r = client.post("/v1/jobs/nads", json=body)
    assert r.status_code == 422, r.text
    msg = r.json()["detail"]["msg"]
    assert "exceeds the quota" in msg and "NADS_MAX_MEMORY_BYTES" in msg, msg
    assert r.json()["detail"]["estimate"]["memory_bytes"] > 16 * 2**30
    r = client.post("/v1/jobs/nads", json={**body, "num_networks": 1_000})
    assert r.status_code == 202, r.text
