"""The catalog looks the same everywhere (issue 17: `nads catalog ls` listed 2 entries where the
web page listed 5): the API lists the paper's five architectures, absent ones included with how
to build them and whether that needs a GPU worker; the Python client, `nads catalog ls` and the
web page (headless Chromium) list exactly those; a file of an entry not built is a 404 that says
how to build it and what it needs.

An API on embedded defaults (SQLite, a file broker) with no worker: nothing here computes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.main import create_app
from jobs import catalog
from nads.client import Client, NadsError
from store.db import session_scope
from store.migrate import upgrade
from store.settings import Settings
from tests.browser import chromium, screenshot
from tests.support import NADS_BIN, ServerThread

PAPER = ["logreg", "lenet", "vgg11", "resnet18", "densenet121"]
GPU = {"vgg11", "resnet18", "densenet121"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    """An API whose catalog has one entry started (lenet, building) and four not."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("catalog-listing"),
                        catalog_shipped_dir="")
    upgrade(settings.resolved_database_url)
    with session_scope(settings.resolved_database_url) as session:
        catalog.ensure_entry(session, "lenet", settings)  # a row, no job yet: building
    with ServerThread(create_app(settings)) as running:
        yield running.url, settings


def test_the_api_lists_all_five_saying_how_to_build_the_absent(
        server: tuple[str, Settings]) -> None:
    url, _ = server
    entries = httpx.get(f"{url}/v1/catalog", timeout=30).json()
    assert [e["name"] for e in entries] == PAPER
    status = {e["name"]: e["status"] for e in entries}
    assert status == {"logreg": "absent", "lenet": "building", "vgg11": "absent",
                      "resnet18": "absent", "densenet121": "absent"}
    for e in entries:
        assert e["needs_gpu"] is (e["name"] in GPU)
        if e["status"] != "absent":
            continue
        assert e["message"].startswith(
            f"not built on this server: an operator builds it with `nads catalog build --arch "
            f"{e['name']}`"), e["message"]
        assert ("needs a GPU worker" in e["message"]) is (e["name"] in GPU)
        assert "10,000 networks" in e["message"] and "FLOPs" in e["message"]
        assert (e["input_shape"], e["max_networks"], e["origin"]) == ([1, 32, 32], 10_000, None)
    one = httpx.get(f"{url}/v1/catalog/resnet18", timeout=30).json()
    assert one == next(e for e in entries if e["name"] == "resnet18")


def test_a_file_of_an_entry_not_built_is_a_404_that_says_how_to_build_it(
        server: tuple[str, Settings]) -> None:
    url, _ = server
    r = httpx.get(f"{url}/v1/catalog/vgg11/nads.npy", timeout=30)
    assert r.status_code == 404
    detail = r.json()["detail"]
    assert detail.startswith("arch: 'vgg11' is not built on this server: an operator builds "
                             "it with `nads catalog build --arch vgg11`"), detail
    assert "6.2e+15 FLOPs" in detail and "needs a GPU worker" in detail
    r = httpx.get(f"{url}/v1/catalog/logreg/preview.png", timeout=30)
    assert r.status_code == 404 and "CPU workers build it" in r.json()["detail"]
    for path in ("/v1/catalog/alexnet", "/v1/catalog/alexnet/nads.npy"):
        r = httpx.get(url + path, timeout=30)
        assert r.status_code == 404
        assert r.json()["detail"] == ("arch: 'alexnet' is not an architecture of the catalog; "
                                      "it holds logreg, lenet, vgg11, resnet18, densenet121")
    assert httpx.get(f"{url}/v1/catalog/lenet/nads.npy", timeout=30).status_code == 409


def test_the_client_and_the_cli_list_the_same_entries(server: tuple[str, Settings],
                                                       tmp_path: Path) -> None:
    url, _ = server
    api = [(e["name"], e["status"]) for e in httpx.get(f"{url}/v1/catalog", timeout=30).json()]
    with Client(url, key=None) as client:
        assert [(e.name, e.status) for e in client.catalog_ls()] == api
        with pytest.raises(NadsError) as err:
            client.catalog("densenet121")
        assert err.value.status_code == 404 and "needs a GPU worker" in str(err.value)
    env = {"PATH": str(Path(sys.executable).parent), "NADS_URL": url, "HOME": str(tmp_path)}
    ls = subprocess.run([NADS_BIN, "catalog", "ls"], env=env, capture_output=True, text=True,
                        timeout=60)
    assert ls.returncode == 0, ls.stderr
    lines = ls.stdout.splitlines()
    assert [(line.split()[0], line.split()[1]) for line in lines] == api, ls.stdout
    for line in lines:
        name = line.split()[0]
        if dict(api)[name] == "absent":
            assert f"nads catalog build --arch {name}" in line
            assert ("needs a GPU worker" in line) is (name in GPU)
    get = subprocess.run([NADS_BIN, "catalog", "get", "resnet18", "--out",
                          str(tmp_path / "r.npy")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert get.returncode != 0 and "nads catalog build --arch resnet18" in get.stderr, get
    assert not (tmp_path / "r.npy").exists()


def _page_texts(url: str, tmp_path: Path, errors: list[str]
                ) -> tuple[list[tuple[str | None, str | None]], dict[str, str]]:
    """(arch, status) of every row of the catalog page, and each row's text."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{url}/#/catalog")
        page.wait_for_selector("#catalog[data-loaded=true]", timeout=60_000)
        rows = page.locator("#catalog article")
        shown = [(rows.nth(i).get_attribute("data-arch"),
                  rows.nth(i).get_attribute("data-status")) for i in range(rows.count())]
        texts = {name: page.inner_text(f"#catalog article[data-arch={name}]")
                 for name, _ in shown}
        screenshot(page, tmp_path, "catalog-listing")
    return shown, texts


def test_the_web_page_lists_the_same_entries(server: tuple[str, Settings],
                                             tmp_path: Path) -> None:
    url, _ = server
    api = {e["name"]: e for e in httpx.get(f"{url}/v1/catalog", timeout=30).json()}
    errors: list[str] = []
    shown, texts = _page_texts(url, tmp_path, errors)
    assert shown == [(name, e["status"]) for name, e in api.items()]
    for name, e in api.items():
        if e["status"] == "absent":
            assert e["message"] in texts[name]
            assert ("needs a GPU worker" in texts[name]) is (name in GPU)
    assert errors == []


def test_an_entry_of_fewer_networks_than_the_papers_says_a_full_build_is_pending(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """A shipped entry of 12 networks (a background CPU build stops at 2,000 the same way):
    the API, `nads catalog ls` and the page say how many networks it has, its split-half
    stability, and that a 10,000-network build is pending."""
    from nads.catalog_export import export_direct

    shipped = tmp_path_factory.mktemp("pending-shipped")
    export_direct(shipped, "logreg", networks=12, device="cpu", check_networks=2)
    # a background build of vgg11 under way: its partials ship, the listing counts them
    (shipped / "vgg11" / "partials").mkdir(parents=True)
    for name in ("00000-00020.npz", "00020-00040.npz", ".00040-00060.npz.123.tmp", ".lock"):
        (shipped / "vgg11" / "partials" / name).write_bytes(b"")
    settings = Settings(data_dir=tmp_path_factory.mktemp("pending"), catalog_shipped_dir=shipped)
    upgrade(settings.resolved_database_url)
    from jobs.shipped import install_shipped

    with session_scope(settings.resolved_database_url) as session:
        assert install_shipped(session, settings) == {"logreg": "installed"}
    with ServerThread(create_app(settings)) as running:
        url = running.url
        logreg = httpx.get(f"{url}/v1/catalog/logreg", timeout=30).json()
        assert (logreg["status"], logreg["networks"]) == ("ready", 12)
        assert logreg["full_build_pending"] is True and logreg["paper_networks"] == 10_000
        assert "12 of the paper's 10,000; a 10,000-network build is pending" in \
            logreg["message"], logreg["message"]
        assert "split-half stability" in logreg["message"] and "at k=4" in logreg["message"]
        lenet = next(e for e in httpx.get(f"{url}/v1/catalog", timeout=30).json()
                     if e["name"] == "lenet")
        assert lenet["full_build_pending"] is False and lenet["status"] == "absent"
        vgg11 = httpx.get(f"{url}/v1/catalog/vgg11", timeout=30).json()
        assert (vgg11["status"], vgg11["networks_done"]) == ("absent", 40)
        assert "a background CPU build (nads catalog compute) has computed 40 networks, in " \
            "catalog_data/vgg11/partials/" in vgg11["message"], vgg11["message"]
        assert lenet["networks_done"] == 0 and "background" not in lenet["message"]
        env = {"PATH": str(Path(sys.executable).parent), "NADS_URL": url, "HOME": str(tmp_path)}
        ls = subprocess.run([NADS_BIN, "catalog", "ls"], env=env, capture_output=True,
                            text=True, timeout=60)
        assert ls.returncode == 0, ls.stderr
        line = next(x for x in ls.stdout.splitlines() if x.startswith("logreg"))
        assert "networks 12 " in line and "a 10,000-network build is pending" in line, line
        errors: list[str] = []
        shown, texts = _page_texts(url, tmp_path, errors)
    assert ("logreg", "ready") in shown
    assert "12 (of the paper's 10,000: a 10,000-network build is pending)" in texts["logreg"]
    assert "at k = 4" in texts["logreg"], texts["logreg"]
    assert errors == []
