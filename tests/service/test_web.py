"""The web page end to end, in headless Chromium (Debian's `chromium`, driven by Playwright with
`executable_path`; `scripts/install.sh` installs it) against the real server, Postgres, Redis
and Celery worker of the fixtures, with screenshots (under the pytest tmp dir, and also under
`NADS_SCREENSHOT_DIR` when set). Plus the worker's NAD figures: checked against analytic cases
and read back as images.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from matplotlib.image import imread

from jobs.broker import make_celery
from jobs.catalog import build
from nadcore.figures import shifted
from nadcore.nads.figures import (
    fourier_energy,
    gallery_size,
    nad_title,
    render_nad_figures,
    spatial_view,
)
from store.db import session_scope
from store.settings import Settings
from tests.browser import screenshot
from tests.support import failing_poison, keyed_client, new_key, wait_for_job

TIMEOUT_MS = 120_000
CATALOG = ["logreg", "lenet"]
PAPER = ["logreg", "lenet", "vgg11", "resnet18", "densenet121"]

NAD_SHARDED = {"architecture": "lenet", "input_shape": [1, 32, 32], "num_networks": 24,
               "seed": 3, "shards": 2}
NAD_SEQUENTIAL = {"architecture": "logreg", "input_shape": [1, 8, 8], "num_networks": 60,
                  "seed": 2, "target_stability": 0.5, "stability_k": 1, "check_every": 20}
LONG = {"architecture": "lenet", "input_shape": [1, 32, 32], "num_networks": 100_000,
        "seed": 5}  # hours on this CPU: it is cancelled from its page
POISON = {"architecture": "lenet", "indices": [0, 3], "training": {"epochs": 1},
          "dataset": {"name": "digits", "limit_train": 300, "limit_test": 200}}
PROBE = {"architecture": "logreg", "input_shape": [1, 8, 8],
         "directions": {"kind": "fourier", "frequencies": [[0, 1], [1, 2], [3, 3], [4, 4]],
                        "phase": "cos"},
         "data": {"num_train": 256, "num_test": 256}, "training": {"epochs": 2}, "seed": 0}


# ---------- the worker's figures (no service) ----------

def test_fourier_energy_of_a_cosine_sits_at_its_two_frequencies() -> None:
    c, h, w = 2, 16, 12
    ky, kx = 3, -2
    y, x = np.mgrid[0:h, 0:w]
    nad = np.zeros((c, h, w))
    nad[0] = np.cos(2 * np.pi * (ky * y / h + kx * x / w))
    energy = fourier_energy(nad)
    assert energy.shape == (h, w)
    peaks = {(h // 2 + ky, w // 2 + kx), (h // 2 - ky, w // 2 - kx)}
    for py, px in peaks:  # |fft2 cos|^2 = (H W / 2)^2 at +-k
        assert energy[py, px] == pytest.approx((h * w / 2) ** 2)
        assert (shifted((py - h // 2) % h, h), shifted((px - w // 2) % w, w)) in {(ky, kx),
                                                                              (-ky, -kx)}
    rest = energy.copy()
    for py, px in peaks:
        rest[py, px] = 0.0
    assert np.abs(rest).max() < 1e-9 * energy.max()
    # DC at the centre: a constant image puts all its energy there.
    const = np.full((1, h, w), 0.5)
    dc = fourier_energy(const)
    assert dc[h // 2, w // 2] == pytest.approx((0.5 * h * w) ** 2) and dc.sum() == dc[h // 2,
                                                                                        w // 2]


def test_fourier_energy_sums_channels_and_obeys_parseval() -> None:
    rng = np.random.default_rng(0)
    nad = rng.standard_normal((3, 9, 10))
    energy = fourier_energy(nad)
    assert energy.sum() == pytest.approx(9 * 10 * float((nad ** 2).sum()))
    parts = sum(fourier_energy(nad[i:i + 1]) for i in range(3))
    np.testing.assert_allclose(energy, parts)
    np.testing.assert_array_equal(spatial_view(nad), nad[0])


def _summary(arch: str, shape: list[int], k: int) -> dict:
    return {"architecture": arch, "input_shape": shape, "method": "finite_difference",
            "scale": 100.0, "num_networks": 50, "stability": {"1": 0.9, str(k): 0.5}}


@pytest.mark.parametrize(("shape", "k"), [([1, 16, 16], 20), ([3, 8, 8], 5)])
def test_nad_figures_are_pngs_of_the_expected_layout(tmp_path: Path, shape: list[int],
                                                     k: int) -> None:
    rng = np.random.default_rng(1)
    d = int(np.prod(shape))
    nads = np.linalg.qr(rng.standard_normal((d, k)))[0].T.astype(np.float32)
    eigenvalues = np.sort(rng.random(k))[::-1] * 1e-3
    summary = _summary("lenet", shape, k)
    files = render_nad_figures(nads, eigenvalues, summary, tmp_path)
    assert [f.name for f in files] == ["preview.png", "spectrum.png"]
    preview, spectrum = (imread(f, format="png") for f in files)
    shown = min(k, 8)
    width, height = gallery_size(shown)
    assert preview.shape[:2] == (height, width)  # one column per NAD shown
    assert spectrum.shape[:2] == (400, 700)
    for image in (preview, spectrum):
        assert image.ndim == 3 and float(image[..., :3].std()) > 0.05
    # Deterministic: a merge done twice stores the same blobs.
    (tmp_path / "again").mkdir()
    again = render_nad_figures(nads, eigenvalues, summary, tmp_path / "again")
    assert [f.read_bytes() for f in again] == [f.read_bytes() for f in files]
    assert "lenet" in nad_title(summary) and "scale 100" in nad_title(summary)


def test_gallery_refuses_rows_of_the_wrong_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nads: expected"):
        render_nad_figures(np.zeros((4, 10), np.float32), np.ones(4),
                           _summary("logreg", [1, 4, 4], 4), tmp_path)


# ---------- the service and the browser ----------

def start_catalog(settings: Settings, names: list[str]) -> None:
    """Starts catalog builds with a tiny network budget (one round of 20 networks)."""
    tiny = settings.model_copy(update={"catalog_networks": 20, "catalog_round_networks": 20,
                                       "catalog_shard_networks": 10, "catalog_stability_k": 1})
    with session_scope(settings.resolved_database_url) as session:
        build(session, make_celery(settings), tiny, names)


def wait_for_catalog(client: httpx.Client, names: list[str], timeout: float = 180) -> list[dict]:
    """GET /v1/catalog once every entry of `names` is ready."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get("/v1/catalog")
        assert r.status_code == 200, r.text
        entries = r.json()
        status = {e["name"]: e["status"] for e in entries}
        if all(status.get(n) == "ready" for n in names):
            return entries
        assert time.monotonic() < deadline, f"catalog not ready after {timeout} s: {entries}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def web_user(settings: Settings, api_url: str) -> Iterator[tuple[str, httpx.Client]]:
    key = new_key(settings, f"web-{time.monotonic_ns() % 10**8}")
    with keyed_client(api_url, key) as client:
        yield key, client


def test_page_and_assets_are_served(anonymous: httpx.Client) -> None:
    r = anonymous.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/web/app.js" in r.text and "default-src 'none'" in r.headers[
        "content-security-policy"]
    for name, media in (("app.js", "text/javascript"), ("views.js", "text/javascript"),
                        ("style.css", "text/css")):
        asset = anonymous.get(f"/web/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media)
        assert asset.headers["etag"] and asset.headers["cache-control"] == "no-cache"
        etag = asset.headers["etag"]
        assert anonymous.get(f"/web/{name}", headers={"If-None-Match": etag}).status_code == 304
    missing = anonymous.get("/web/../pyproject.toml")
    assert missing.status_code == 404
    r = anonymous.get("/web/secrets.txt")
    assert r.status_code == 404 and "app.js" in r.json()["detail"]


@pytest.mark.slow
@pytest.mark.usefixtures("worker")
def test_web_page_end_to_end(browser: object, api_url: str, web_user: tuple[str, httpx.Client],
                             settings: Settings, tmp_path: Path) -> None:
    key, client = web_user
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    requests: list[tuple[str, dict]] = []
    page.on("request", lambda req: requests.append((req.url, req.headers)))
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.on("console", lambda msg: page_errors.append(msg.text)  # any error: CSP, 404, ...
            if msg.type == "error" else None)
    try:
        # The page asks for the key; a wrong one is refused with a message.
        page.goto(api_url + "/")
        page.wait_for_selector("#key-form")
        screenshot(page, tmp_path, "01-key")
        page.fill("#api-key", "nads_not-a-key")
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#key-form .error:not([hidden])")
        assert "does not know this key" in page.inner_text("#key-form .error")
        # Chromium logs the refused key's 401 itself (a failed fetch): that one, nothing else
        assert len(page_errors) == 1 and "status of 401" in page_errors[0], page_errors
        page_errors.clear()
        page.fill("#api-key", key)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#jobs[data-loaded=true]")

        # Jobs submitted while the page is open appear without a reload.
        ids = {}
        for name, path, body in (("sharded", "nads", NAD_SHARDED),
                                 ("sequential", "nads", NAD_SEQUENTIAL),
                                 ("probe", "probe", PROBE),
                                 ("failing", "poison", failing_poison(client))):
            r = client.post(f"/v1/jobs/{path}", json=body)
            assert r.status_code == 202, r.text
            ids[name] = r.json()["id"]
        page.wait_for_selector(f"tr[data-job='{ids['sharded']}']")
        screenshot(page, tmp_path, "02-jobs-live")

        # Catalog builds (tiny: 20 networks), queued behind those jobs on the one worker and
        # built one after the other: lenet waits for logreg, so it is building now (unless an
        # earlier test of the session built it already).
        before = {e["name"] for e in client.get("/v1/catalog").json() if e["status"] != "absent"}
        start_catalog(settings, CATALOG)
        page.click("a[data-nav=catalog]")
        page.wait_for_selector("#catalog[data-loaded=true]")
        lenet = page.locator("#catalog article[data-arch=lenet]")
        if "lenet" not in before:
            assert lenet.get_attribute("data-status") == "building"
            assert lenet.locator(".progress").count() == 1
        absent = set(PAPER) - before - set(CATALOG)
        assert page.locator("#catalog article[data-status=absent]").count() == len(absent)
        screenshot(page, tmp_path, "03-catalog-building")

        # Back to the list: every job reaches succeeded, live.
        page.click("a[data-nav=jobs]")
        for name, job_id in ids.items():
            state = "failed" if name == "failing" else "succeeded"
            page.wait_for_selector(f"tr[data-job='{job_id}'] [data-status={state}]")
        screenshot(page, tmp_path, "04-jobs-done")
        page.select_option("#filter-kind", "probe")  # the filter asks the API for one kind
        page.wait_for_function("() => { const rows = [...document.querySelectorAll("
                               "'#jobs tbody tr')]; return rows.length === 1 && "
                               "rows[0].dataset.kind === 'probe'; }")
        page.select_option("#filter-kind", "")
        jobs = {name: wait_for_job(client, job_id, timeout=5) for name, job_id in ids.items()}
        failing_row = page.inner_text(f"tr[data-job='{ids['failing']}']")
        assert jobs["failing"]["error"][:60] in failing_row  # the error, cut at 80 characters

        # A failed job's page says why, as text.
        page.goto(f"{api_url}/#/jobs/{ids['failing']}")
        page.wait_for_selector("#job-status [data-status=failed]")
        assert jobs["failing"]["error"] in page.inner_text("#job-live .error")
        page.goto(f"{api_url}/#/jobs")

        # Every NAD job (sharded merge and sequential) carries its figures as PNG artifacts.
        for name in ("sharded", "sequential"):
            job = jobs[name]
            media = {a["name"]: a["media_type"] for a in job["artifacts"]}
            assert media["preview.png"] == media["spectrum.png"] == "image/png", media
            for figure in ("preview.png", "spectrum.png"):
                data = client.get(f"/v1/jobs/{job['id']}/artifacts/{figure}").content
                image = imread(io.BytesIO(data), format="png")
                assert image.shape[0] > 100 and float(image[..., :3].std()) > 0.05
            preview = imread(io.BytesIO(client.get(
                f"/v1/jobs/{job['id']}/artifacts/preview.png").content), format="png")
            shown = min(8, job["summary"]["num_nads"])
            assert preview.shape[1::-1] == gallery_size(shown)

        # The NAD job page: gallery and spectrum load (decoded images, not broken ones).
        page.click(f"tr[data-job='{ids['sharded']}'] a")
        for name in ("preview.png", "spectrum.png"):
            page.wait_for_function(
                f"() => {{ const i = document.querySelector(\"img[data-artifact='{name}']\");"
                " return i && i.complete && i.naturalWidth > 0; }")
        assert page.locator("#job-status [data-status=succeeded]").count() == 1
        assert "24" in page.inner_text(".facts")  # networks used
        # How much it means: stability beside chance (k / 1024), identifiable or not, and the
        # overlap with the catalog (or that there is no catalog entry to compare with)
        facts = page.inner_text(".facts")
        assert "Split-half stability" in facts and "(chance 0.00098)" in facts
        assert "Identifiable" in facts and "Overlap with the catalog" in facts
        _gallery_loaded(page, 8)  # and its NADs drawn from nads.npy (8 of its 23)
        screenshot(page, tmp_path, "05-nad-job")
        with page.expect_download() as download:  # fetched with the key, saved from a blob:
            page.click("table.artifacts tr:has(code:text-is('nads.npy')) button")
        assert download.value.suggested_filename == "nads.npy"
        sha = next(a["sha256"] for a in jobs["sharded"]["artifacts"] if a["name"] == "nads.npy")
        assert hashlib.sha256(Path(download.value.path()).read_bytes()).hexdigest() == sha

        # logreg's NADs are not identifiable (isotropic gradient covariance): its page says so
        page.goto(f"{api_url}/#/jobs/{ids['sequential']}")
        page.wait_for_selector("#not-identifiable")
        assert "within the noise of chance" in page.inner_text("#not-identifiable")
        assert jobs["sequential"]["summary"]["identifiability"]["identifiable"] is False

        # The probe job page shows its heatmap.
        page.goto(f"{api_url}/#/jobs/{ids['probe']}")
        page.wait_for_function(
            "() => { const i = document.querySelector(\"img[data-artifact='heatmap.png']\");"
            " return i && i.complete && i.naturalWidth > 0; }")
        page.wait_for_function(  # the training curves (curves.npy) as a figure too
            "() => { const i = document.querySelector(\"img[data-artifact='curves.png']\");"
            " return i && i.complete && i.naturalWidth > 0; }")
        screenshot(page, tmp_path, "06-probe-job")

        # A poison job (NADs of the LeNet job above), followed on its page from submission to
        # its figures: the page polls until the job ends, then shows the curves and examples.
        r = client.post("/v1/jobs/poison", json=POISON | {"nads": {"job": ids["sharded"]}})
        assert r.status_code == 202, r.text
        page.goto(f"{api_url}/#/jobs/{r.json()['id']}")
        for name in ("accuracy_vs_index.png", "curves.png", "examples.png"):
            page.wait_for_function(
                f"() => {{ const i = document.querySelector(\"img[data-artifact='{name}']\");"
                " return i && i.complete && i.naturalWidth > 0; }")
        poison = wait_for_job(client, r.json()["id"], timeout=5)
        clean = poison["summary"]["clean_accuracy"]  # the job's clean run: the baseline
        assert f"{clean:.1f} % clean-test accuracy, trained without poison" in page.inner_text(
            ".facts")
        screenshot(page, tmp_path, "07-poison-job")

        # A long job cancelled from its page: the button posts the cancel, the page follows
        # the job to `cancelled`.
        # Estimated at hours on the connected CPU workers, past NADS_MAX_ESTIMATED_RUN_S: the
        # submission accepts the wait (the job is meant to be running when it is cancelled).
        r = client.post("/v1/jobs/nads", json=LONG, params={"accept_long": "true"})
        assert r.status_code == 202, r.text
        page.goto(f"{api_url}/#/jobs/{r.json()['id']}")
        page.click("#cancel-job")
        page.wait_for_selector("#job-status [data-status=cancelled]")
        assert wait_for_job(client, r.json()["id"])["status"] == "cancelled"

        # The catalog page (public): one row per entry of GET /v1/catalog, in its order, the
        # ready ones with their preview (the catalog job's preview.png) loaded.
        entries = wait_for_catalog(client, CATALOG)
        page.click("a[data-nav=catalog]")
        page.wait_for_selector("#catalog[data-loaded=true]")
        rows = page.locator("#catalog article.catalog-row")
        built = [e["name"] for e in entries]
        assert [rows.nth(i).get_attribute("data-arch") for i in range(rows.count())] == built + [
            n for n in PAPER if n not in built]  # the five, those not built yet last
        for entry in (e for e in entries if e["status"] == "ready"):
            page.wait_for_function(
                f"() => {{ const i = document.querySelector(\"img[data-arch='{entry['name']}']\");"
                " return i && i.complete && i.naturalWidth > 0; }")
        # ... and flags entries whose NADs are not identifiable, as the API says (logreg's
        # always: its gradient covariance is isotropic)
        flagged = {e["name"] for e in entries if e["status"] == "ready"
                   and (e["identifiability"] or {}).get("identifiable") is False}
        assert "logreg" in flagged
        for entry in (e for e in entries if e["status"] == "ready"):
            banner = page.locator(f"#not-identifiable-{entry['name']}")
            assert banner.count() == (entry["name"] in flagged), entry["name"]
        screenshot(page, tmp_path, "08-catalog-ready")

        # The key was kept (no form after a reload), went only in the Authorization header,
        # and "Forget key" brings the form back.
        page.goto(api_url + "/#/jobs")
        page.wait_for_selector("#jobs[data-loaded=true]")
        assert all(key not in url for url, _ in requests)
        artifact_requests = [h for url, h in requests if "/artifacts/" in url]
        assert artifact_requests and all(h.get("authorization") == f"Bearer {key}"
                                         for h in artifact_requests)
        page.click("#forget-key")
        page.wait_for_selector("#key-form")
        assert page.evaluate("localStorage.getItem('nads.apiKey')") is None
        assert page_errors == []
    finally:
        context.close()


# ---------- any number of NADs, uploaded architectures by name ----------

GALLERY_JOB = {"architecture": "lenet", "input_shape": [1, 16, 16], "num_networks": 40,
               "method": "autograd", "seed": 1}  # 40 networks: k = 39 NADs (centred)


def _upload_architecture(client: httpx.Client, folder: Path, name: str) -> dict:
    from nads.export_command import export_architecture

    path = export_architecture("logreg", (1, 8, 8), folder / f"{name}.pt2")
    r = client.post("/v1/architectures", data={"name": name, "input_shape": "1,8,8"},
                    files={"file": (path.name, path.read_bytes(), "application/octet-stream")})
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 120
    while (row := client.get(f"/v1/architectures/{r.json()['id']}").json())["status"] == (
            "validating"):
        assert time.monotonic() < deadline, row
        time.sleep(0.3)
    assert row["status"] == "ready", row
    return row


def _gallery_loaded(page: object, count: int) -> None:
    page.wait_for_function(
        "(n) => { const g = document.querySelector('#nad-grid');"
        " return g && g.dataset.loaded === 'true' && Number(g.dataset.count) === n; }",
        arg=count)


@pytest.mark.slow
@pytest.mark.usefixtures("worker")
def test_nad_gallery_of_any_size_and_the_architectures_pages(
        browser: object, api_url: str, web_user: tuple[str, httpx.Client],
        tmp_path: Path) -> None:
    key, client = web_user
    arch = _upload_architecture(client, tmp_path, "tiny-logreg")
    jobs = {}
    for name, body in (("lenet", GALLERY_JOB),
                       ("custom", {"architecture": {"id": arch["id"]}, "input_shape": [1, 8, 8],
                                   "num_networks": 12, "method": "autograd"})):
        r = client.post("/v1/jobs/nads", json=body)
        assert r.status_code == 202, r.text
        jobs[name] = wait_for_job(client, r.json()["id"], timeout=300)
        assert jobs[name]["status"] == "succeeded", jobs[name]
    # The worker's figures name the uploaded architecture: its summary says how.
    assert jobs["custom"]["summary"]["architecture_name"] == "tiny-logreg"
    nads = np.load(io.BytesIO(client.get(
        f"/v1/jobs/{jobs['lenet']['id']}/artifacts/nads.npy").content))
    assert nads.shape == (39, 256)

    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.on("console", lambda msg: page_errors.append(msg.text)  # any error: CSP, 404, ...
            if msg.type == "error" else None)
    ranges: list[str] = []
    page.on("request", lambda req: ranges.append(req.headers.get("range", ""))
            if req.url.endswith("/artifacts/nads.npy") else None)
    try:
        page.goto(api_url + "/")
        page.wait_for_selector("#key-form")
        page.fill("#api-key", key)
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#jobs[data-loaded=true]")
        # The list names the uploaded architecture, with a link to its page.
        cell = page.locator(f"tr[data-job='{jobs['custom']['id']}'] a[data-arch-id]")
        assert cell.inner_text() == "tiny-logreg"
        assert "custom:" not in page.inner_text("#jobs")

        # The NAD job's page: 8 NADs first, then 32 of its 39; the options stop at k.
        page.goto(f"{api_url}/#/jobs/{jobs['lenet']['id']}")
        _gallery_loaded(page, 8)
        options = page.eval_on_selector_all("#nad-count option", "os => os.map(o => o.value)")
        assert options == ["8", "16", "32", "39"]
        assert page.locator("#nad-gallery [data-colour-bar]").count() == 2
        page.select_option("#nad-count", "32")
        _gallery_loaded(page, 32)
        cells = page.locator("#nad-grid .nad-cell")
        assert cells.count() == 32
        # The page's Fourier energy peaks where numpy's does (a tie between (ky, kx) and
        # (-ky, -kx) of a real image may go either way: compare the energy there).
        peaks = page.eval_on_selector_all("#nad-grid canvas[data-view=fourier]",
                                          "cs => cs.map(c => c.dataset.peak)")
        for i, peak in enumerate(peaks):
            energy = fourier_energy(nads[i].reshape(1, 16, 16))
            ky, kx = (int(v) for v in peak.split(","))
            assert energy[8 + ky, 8 + kx] >= energy.max() * (1 - 1e-5), (i, peak)
        # Only the rows shown were fetched: a header range and one range of rows.
        assert all(r.startswith("bytes=") for r in ranges) and ranges, ranges
        assert any(r.endswith(f"-{128 + 32 * 256 * 4 - 1}") for r in ranges), ranges
        screenshot(page, tmp_path, "09-nad-gallery-32")
        page.select_option("#nad-count", "39")
        _gallery_loaded(page, 39)

        # A job on the uploaded architecture: its name on the page, not its id.
        # (The LeNet job's page, also succeeded, stays until this one is drawn: wait for the
        # heading to name this job.)
        page.goto(f"{api_url}/#/jobs/{jobs['custom']['id']}")
        page.wait_for_function(
            "(id) => { const h = document.querySelector('.job-head h1 .mono');"
            " return h && h.textContent === id && document.querySelector('table.artifacts'); }",
            arg=jobs["custom"]["id"])
        assert page.locator("#job-status [data-status=succeeded]").count() == 1
        facts_text = page.inner_text(".facts")
        assert "tiny-logreg" in facts_text and arch["id"] not in facts_text

        # The architectures: the list, then one architecture's details and its jobs.
        page.click("a[data-nav=architectures]")
        page.wait_for_selector("#architectures[data-loaded=true]")
        row = page.locator(f"#architectures tr[data-arch-id='{arch['id']}']")
        assert "tiny-logreg" in row.inner_text() and "1×8×8" in row.inner_text()
        assert row.locator("[data-status=ready]").count() == 1
        screenshot(page, tmp_path, "10-architectures")
        row.locator("a").click()
        page.wait_for_selector("#architecture-jobs[data-loaded=true]")
        assert page.inner_text("#architecture-name") == "tiny-logreg"
        validation = page.inner_text("#architecture-validation")
        assert "valid" in validation and f"{arch['info']['num_params']:,}" in validation
        listed = page.eval_on_selector_all("#architecture-jobs tr[data-job]",
                                           "rs => rs.map(r => r.dataset.job)")
        assert listed == [jobs["custom"]["id"]]
        screenshot(page, tmp_path, "11-architecture")
        assert page_errors == []
    finally:
        context.close()
