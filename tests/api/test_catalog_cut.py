"""The public catalog's `?k=` (no key): each k a client asks for must cost the server no disk.
Before, every new k was cut into a cache file under $NADS_DATA_DIR/cache/catalog, kept for ever:
an anonymous client asking k = 1..1,024 of the three shipped entries' nads.npy wrote 6.3 GB
(1024 x 1025 / 2 rows of 4 kB each, per entry). The cut is now made per request from the blob
(a few MB at most: the first k rows of one entry's array), with the same ETag, 304 and Range
answers. And it is streamed from the blob a chunk at a time: made whole in memory, each cut
stayed there for as long as its client did not read (40 stalled connections, 205 MiB)."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.main import create_app
from jobs.shipped import install_shipped
from store.db import session_scope
from store.migrate import upgrade
from store.settings import SHIPPED_CATALOG_DIR, Settings
from tests.support import ServerThread


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """An embedded service (SQLite) with the repository's shipped entries installed."""
    data = tmp_path_factory.mktemp("catalog-cut")
    settings = Settings(data_dir=data, catalog_shipped_dir=SHIPPED_CATALOG_DIR)
    upgrade(settings.resolved_database_url)
    with session_scope(settings.resolved_database_url) as session:
        done = install_shipped(session, settings)
    assert done.get("lenet") == "installed", done
    return settings


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(create_app(settings)) as server:
        yield server


@pytest.fixture(scope="module")
def anonymous(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def _files(root: Path) -> dict[Path, int]:
    """The files under `root` and their sizes, the SQLite database's aside."""
    return {p: p.stat().st_size for p in root.rglob("*")
            if p.is_file() and not p.name.startswith("nads.db")}


def test_each_k_an_anonymous_client_asks_for_writes_nothing(settings: Settings,
                                                           anonymous: httpx.Client) -> None:
    url = "/v1/catalog/lenet/nads.npy"
    full = np.load(io.BytesIO(anonymous.get(url).content))
    before = _files(settings.data_dir)
    for k in range(1000, 1024):
        r = anonymous.get(url, params={"k": k})
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(np.load(io.BytesIO(r.content)), full[:k])
    assert _files(settings.data_dir) == before


def test_a_cut_keeps_its_etag_304_and_range(anonymous: httpx.Client) -> None:
    url = "/v1/catalog/lenet/nads.npy"
    sha = anonymous.get("/v1/catalog/lenet").json()["sha256"]
    cut = anonymous.get(url, params={"k": 32})
    assert cut.status_code == 200 and cut.headers["etag"] == f'"{sha}-k32"'
    assert cut.headers["content-length"] == str(len(cut.content))
    assert "public" in cut.headers["cache-control"]
    assert 'filename="lenet-nads-k32.npy"' in cut.headers["content-disposition"]
    assert np.load(io.BytesIO(cut.content)).shape == (32, 1024)
    again = anonymous.get(url, params={"k": 32}, headers={"If-None-Match": cut.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == cut.headers["etag"]
    part = anonymous.get(url, params={"k": 32}, headers={"Range": "bytes=0-127"})
    assert part.status_code == 206 and part.content == cut.content[:128]
    assert part.headers["content-range"] == f"bytes 0-127/{len(cut.content)}"
    for asked, want in (("100-5000", cut.content[100:5001]), ("-9", cut.content[-9:]),
                        ("5000-", cut.content[5000:])):  # the header's end, the rows' end
        part = anonymous.get(url, params={"k": 32}, headers={"Range": f"bytes={asked}"})
        assert part.status_code == 206 and part.content == want, asked
    head = anonymous.head(url, params={"k": 32})
    assert head.status_code == 200 and head.headers["content-length"] == str(len(cut.content))
    past = anonymous.get(url, params={"k": 32}, headers={"Range": f"bytes={10**9}-"})
    assert past.status_code == 416
    eig = anonymous.get("/v1/catalog/lenet/eigenvalues.npy", params={"k": 5})
    assert eig.status_code == 200 and np.load(io.BytesIO(eig.content)).shape == (5,)
    too_many = anonymous.get(url, params={"k": 1025})
    assert too_many.status_code == 422 and "1024 rows" in too_many.text, too_many.text


def _rss_mib() -> float:
    """This process's resident memory (the server runs in one of its threads)."""
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kib / 1024


def test_clients_that_stop_reading_hold_no_cut_in_memory(server: ServerThread,
                                                          anonymous: httpx.Client) -> None:
    """40 anonymous clients ask for a 4 MB cut each (k = 1,017..1,024 rows of 4 kB) and read
    nothing: each may hold a chunk of the server's memory, not its cut (205 MiB when the cut
    was made whole in memory; 9 MiB streamed, as much as the whole file's 40 downloads)."""
    assert anonymous.get("/v1/catalog/lenet/nads.npy", params={"k": 1024}).status_code == 200
    before = _rss_mib()
    stalled = []
    try:
        for i in range(40):
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # takes little
            client.connect(("127.0.0.1", server.port))
            client.sendall(f"GET /v1/catalog/lenet/nads.npy?k={1024 - i % 8} HTTP/1.1\r\n"
                           "Host: test\r\n\r\n".encode())
            stalled.append(client)
        time.sleep(5)  # every request answered as far as its client lets it
        grown = _rss_mib() - before
    finally:
        for client in stalled:
            client.close()
    assert grown < 40, f"{grown:.0f} MiB held by 40 stalled downloads"
