"""The Python client and the `nads` CLI against the real server (uvicorn, Postgres, Redis, a
Celery worker): every verb, its typed results, and its errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nads.client import Client, Job, NadsError
from store.settings import Settings
from tests.support import ServerThread, assert_matches_reference, in_process, new_key, reference

pytestmark = pytest.mark.usefixtures("worker")

NADS_BIN = str(Path(sys.executable).with_name("nads"))
SPEC = {"architecture": "logreg", "input_shape": [1, 8, 8], "num_networks": 30, "seed": 7,
        "shards": 2}


@pytest.fixture(scope="module")
def key(settings: Settings, api_url: str) -> str:
    return new_key(settings, "dora")


@pytest.fixture(scope="module")
def client(api_url: str, key: str) -> Client:
    with Client(api_url, key) as c:
        yield c


def nads_cli(*args: str, url: str, key: str | None = None, env_key: str | None = None,
             cwd: Path | None = None, data_dir: Path | None = None
             ) -> subprocess.CompletedProcess:
    """Runs `nads` with NADS_URL (and NADS_KEY, NADS_DATA_DIR) in the environment, as a user
    would."""
    env = {"PATH": str(Path(sys.executable).parent), "NADS_URL": url}
    if data_dir:
        env["NADS_DATA_DIR"] = str(data_dir)
    if env_key:
        env["NADS_KEY"] = env_key
    flags = ["--key", key] if key else []
    return subprocess.run([NADS_BIN, *args, *flags], env=env, capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_client_verbs_and_typed_results(client: Client, tmp_path: Path) -> None:
    job = client.submit("nads", SPEC)
    assert isinstance(job, Job) and job.kind == "nads" and job.status in ("queued", "running")
    seen: list[float] = []
    done = client.wait(job.id, timeout=120, interval=0.2,
                       on_progress=lambda j: seen.append(j.progress))
    assert done.status == "succeeded" and done.progress == 1.0 and seen[-1] == 1.0
    arrays = client.nads(job.id)
    expected = in_process(SPEC)  # the library's arrays, bit for bit
    for name in ("nads", "eigenvalues", "eval_point"):
        np.testing.assert_array_equal(getattr(arrays, name), expected[name])
    assert_matches_reference(arrays._asdict(), reference(SPEC))  # and the paper's loop
    nads, eigenvalues, eval_point = arrays
    assert nads.shape == (29, 64) and eval_point.shape == (1, 8, 8)
    assert job.id in [j.id for j in client.jobs(kind="nads", limit=None)]
    paths = client.download(job.id, tmp_path / "out", ["nads.npy", "eigenvalues.npy"])
    assert [p.name for p in paths] == ["nads.npy", "eigenvalues.npy"]
    np.testing.assert_array_equal(np.load(paths[0]), expected["nads"])
    with pytest.raises(NadsError) as err:
        client.download(job.id, tmp_path, ["weights.pt"])
    assert "weights.pt" in str(err.value) and "nads.npy" in str(err.value)
    with pytest.raises(NadsError) as err:
        client.cancel(job.id)
    assert err.value.status_code == 409 and "already succeeded" in str(err.value)
    with pytest.raises(NadsError) as err:
        client.status("nope")
    assert err.value.status_code == 404
    with pytest.raises(NadsError) as err:
        client.submit("nads", SPEC | {"num_networks": 1})
    assert err.value.status_code == 422 and "num_networks" in str(err.value)
    with pytest.raises(ValueError, match="kind"):
        client.submit("train", SPEC)


def test_client_needs_a_key_and_a_server(api_url: str) -> None:
    with Client(api_url, key="nads_wrong") as bad, pytest.raises(NadsError) as err:
        bad.status("x")
    assert err.value.status_code == 401
    with Client("http://127.0.0.1:9", key="k") as nowhere, pytest.raises(NadsError) as err:
        nowhere.status("x")
    assert "cannot reach" in str(err.value)


def test_cli_uses_the_key_nads_serve_wrote_for_a_local_url(settings: Settings, api_url: str,
                                                           tmp_path: Path) -> None:
    """No --key and no NADS_KEY: against the local service, the key `nads serve` keeps in its
    data directory (the same function writes it here; tests/nads/test_local_key.py: never
    for another URL), once the service has proved that it holds it (an app that holds it, as
    `nads serve` makes it); a service that cannot prove it (the suite's app, which has no local
    key) is never sent it."""
    from api.main import create_app
    from nads.service_commands import _local_key

    data_dir = tmp_path / "var"
    data_dir.mkdir()
    served = settings.model_copy(update={"data_dir": data_dir})
    key = _local_key(served)
    assert (data_dir / "local-api-key").read_text().strip() == key
    app = create_app(settings)
    app.state.local_key = key
    with ServerThread(app) as server:
        listed = nads_cli("ls", url=server.url, data_dir=data_dir)
        assert listed.returncode == 0, listed.stderr
        in_cwd = nads_cli("ls", url=server.url, cwd=tmp_path)  # ./var, as `nads serve` does
        assert in_cwd.returncode == 0, in_cwd.stderr
        elsewhere = nads_cli("ls", url=server.url, cwd=data_dir)  # no ./var/local-api-key
        assert elsewhere.returncode == 1 and "401" in elsewhere.stderr, elsewhere.stderr
    unproven = nads_cli("ls", url=api_url, cwd=tmp_path)
    assert unproven.returncode == 1 and "did not prove" in unproven.stderr, unproven.stderr


def test_cli_submit_wait_status_ls_download(api_url: str, key: str, tmp_path: Path) -> None:
    sub = nads_cli("submit", "nads", "--arch", "logreg", "--input-shape", "1,8,8",
                   "--networks", "30", "--seed", "7", "--shards", "2", url=api_url, key=key)
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.split()[0]
    wait = nads_cli("wait", job_id, url=api_url, env_key=key)  # the key from NADS_KEY
    assert wait.returncode == 0 and "succeeded" in wait.stdout, wait.stderr
    assert "100%" in wait.stderr  # the progress bar
    short = job_id[:8]  # as the progress line shows it: any unique prefix will do
    assert re.search(rf"^{short} \[#+\] 100%", wait.stderr, re.M), wait.stderr
    status = nads_cli("status", short, "--json", url=api_url, key=key)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["id"] == job_id
    assert json.loads(status.stdout)["spec"]["num_networks"] == 30
    ls = nads_cli("ls", "--kind", "nads", url=api_url, key=key)
    assert job_id in ls.stdout
    down = nads_cli("download", short, "--out", str(tmp_path), "--name", "nads.npy",
                    url=api_url, key=key)
    assert down.returncode == 0, down.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "nads.npy"), in_process(SPEC)["nads"])
    cancel = nads_cli("cancel", short, url=api_url, key=key)
    assert cancel.returncode == 1 and "409" in cancel.stderr and "already" in cancel.stderr
    # A spec's reference too: stored with the whole id.
    probe = nads_cli("submit", "probe", "--arch", "logreg", "--input-shape", "1,8,8",
                     "--directions", "nad", "--nad-job", short, "--epochs", "1",
                     "--set", "directions.indices=[0]", "--set", "data.num_train=64",
                     "--set", "data.num_test=32", "--accept-underpowered", "--json",
                     url=api_url, key=key)
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout)["spec"]["directions"]["job"] == job_id
    nads_cli("cancel", json.loads(probe.stdout)["id"], url=api_url, key=key)


def test_cli_spec_file_set_and_errors(api_url: str, key: str, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("architecture: logreg\ninput_shape: [1, 8, 8]\nnum_networks: 12\n")
    sub = nads_cli("submit", "nads", "--spec", str(spec), "--set", "seed=3", "--networks", "10",
                   "--json", url=api_url, key=key)
    assert sub.returncode == 0, sub.stderr
    job = json.loads(sub.stdout)
    assert (job["spec"]["num_networks"], job["spec"]["seed"]) == (10, 3)  # flags over the file
    cancel = nads_cli("cancel", job["id"], url=api_url, key=key)
    assert cancel.returncode in (0, 1)  # it may have finished already
    bad = nads_cli("submit", "nads", "--spec", str(spec), "--set", "k=5000", url=api_url, key=key)
    assert bad.returncode == 1 and "422" in bad.stderr and "k" in bad.stderr
    noarch = nads_cli("submit", "nads", url=api_url, key=key)
    assert noarch.returncode == 2 and "--arch" in noarch.stderr
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    wrong = nads_cli("submit", "probe", "--spec", str(listed), url=api_url, key=key)
    assert wrong.returncode == 1 and "mapping" in wrong.stderr
    nokey = nads_cli("status", "x", url=api_url, cwd=tmp_path)  # no ./var/local-api-key
    assert nokey.returncode == 1 and "401" in nokey.stderr
    shape = nads_cli("submit", "nads", "--arch", "lenet", "--input-shape", "1,8", url=api_url,
                     key=key)
    assert shape.returncode == 2 and "C,H,W" in shape.stderr


def test_cli_submit_probe_with_flags_and_set(api_url: str, key: str, client: Client) -> None:
    sub = nads_cli("submit", "probe", "--arch", "logreg", "--input-shape", "1,8,8",
                   "--directions", "random", "--count", "2", "--epochs", "1",
                   "--set", "data.num_train=64", "--set", "data.num_test=32", "--json",
                   url=api_url, key=key)
    assert sub.returncode == 0, sub.stderr
    job = json.loads(sub.stdout)
    assert job["kind"] == "probe"
    assert job["spec"]["directions"] == {"kind": "random", "count": 2, "seed": 0}
    assert (job["spec"]["data"]["num_train"], job["spec"]["training"]["epochs"]) == (64, 1)
    assert client.wait(job["id"], timeout=120, interval=0.3).status == "succeeded"


def test_cli_wait_reports_a_cancelled_job(api_url: str, key: str, client: Client) -> None:
    # Long enough to be cancelled while it runs (~20 s on the suite's worker); accept_long: a
    # worker that measured a low FLOP/s on a loaded machine must not have it refused.
    job = client.submit("nads", {"architecture": "lenet", "input_shape": [1, 16, 16],
                                 "num_networks": 4000, "seed": 1}, accept_long=True)
    deadline = time.monotonic() + 60
    while client.status(job.id).status == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert nads_cli("cancel", job.id, url=api_url, key=key).returncode == 0
    wait = nads_cli("wait", job.id, url=api_url, key=key)
    assert wait.returncode == 1 and "cancelled" in wait.stdout


def test_export_then_arch_upload(api_url: str, key: str, tmp_path: Path) -> None:
    """`nads export` writes a built-in architecture, `nads arch upload --wait` sends it as the
    multipart form of POST /v1/architectures and follows the worker's validation; a file
    that is not a model is refused."""
    model = tmp_path / "lenet.pt"
    out = nads_cli("export", "--arch", "lenet", "--input-shape", "1,16,16", "--out",
                   str(model), "--format", "torchscript", url=api_url)
    assert out.returncode == 0 and model.is_file(), out.stderr
    up = nads_cli("arch", "upload", str(model), "--name", "my-lenet", "--input-shape",
                  "1,16,16", "--wait", "--json", url=api_url, key=key)
    assert up.returncode == 0, (up.stdout, up.stderr)
    arch = json.loads(up.stdout)
    assert (arch["name"], arch["status"], arch["input_shape"]) == ("my-lenet", "ready",
                                                                  [1, 16, 16])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    bad = nads_cli("arch", "upload", str(junk), "--name", "junk", "--input-shape", "1,8,8",
                   "--wait", url=api_url, key=key)
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    assert "rejected" in bad.stdout or re.search(r"\b4\d\d from ", bad.stderr), bad.stderr
    shape = nads_cli("arch", "upload", str(model), "--name", "x", "--input-shape", "1,16",
                     url=api_url, key=key)
    assert shape.returncode == 2 and "C,H,W" in shape.stderr
    # ls, show and rm, by a prefix; rm says which running jobs use it (they keep running).
    listed = nads_cli("arch", "ls", url=api_url, key=key)
    assert listed.returncode == 0 and re.search(rf"^{arch['id']}  my-lenet .* ready ",
                                                listed.stdout, re.M), listed.stdout
    shown = nads_cli("arch", "show", arch["id"][:8], url=api_url, key=key)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(arch["id"]) and "parameters" in shown.stdout, shown.stdout
    job = nads_cli("submit", "nads", "--set", f'architecture={{"id": "{arch["id"][:8]}"}}',
                   "--input-shape", "1,16,16", "--networks", "20000", "--accept-long",
                   "--json", url=api_url, key=key)
    assert job.returncode == 0, job.stderr
    job_id = json.loads(job.stdout)["id"]
    assert json.loads(job.stdout)["spec"]["architecture"]["id"] == arch["id"]
    removed = nads_cli("arch", "rm", arch["id"][:8], url=api_url, key=key)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith(f"deleted {arch['id']}  my-lenet")
    assert "1 queued or running job(s) use it and keep running" in removed.stdout
    assert job_id[:8] in removed.stdout
    nads_cli("cancel", job_id, url=api_url, key=key)
    gone = nads_cli("arch", "show", arch["id"], url=api_url, key=key)
    assert gone.returncode == 1 and "404" in gone.stderr and "architecture_id" in gone.stderr


def test_arch_upload_wait_prints_the_id_first_and_the_client_waits(
        api_url: str, key: str, client: Client, tmp_path: Path) -> None:
    """`nads arch upload --wait` prints the id as soon as the upload is stored, then follows the
    validation on stderr; `Client.wait_architecture` polls like `Client.wait`."""
    model = tmp_path / "logreg.pt"
    out = nads_cli("export", "--arch", "logreg", "--input-shape", "1,8,8", "--out", str(model),
                   "--format", "torchscript", url=api_url)
    assert out.returncode == 0, out.stderr
    proc = subprocess.Popen([NADS_BIN, "arch", "upload", str(model), "--name", "lr",
                             "--input-shape", "1,8,8", "--wait", "--key", key],
                            env={"PATH": str(Path(sys.executable).parent), "NADS_URL": api_url},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # before the validation is over
    arch_id = first.split()[0]
    assert re.fullmatch(r"[0-9a-f]{32}", arch_id) and "validating" in first, first
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert rest.startswith(arch_id) and " ready " in rest, rest
    assert err.startswith(f"{arch_id[:8]} [") and "validating" in err, err
    assert re.search(r"validating  (waiting for a free process of the validation lane|a worker "
                     r"checks the archive in its sandbox) \(\d+ s\)", err), err
    arch = client.arch_upload(model, "lr2", (1, 8, 8))
    seen: list[str] = []
    done = client.wait_architecture(arch.id[:6], timeout=120, interval=0.2,
                                    on_progress=lambda a: seen.append(a.status))
    assert done.id == arch.id and done.status == "ready" and done.done and seen[-1] == "ready"
    assert done.raw["validation_sent_at"] >= done.raw["created_at"]  # held, then sent
    assert arch.id in [a.id for a in client.architectures()]
    client.arch_delete(arch.id)
    assert arch.id not in [a.id for a in client.architectures()]


def test_help_is_fast_and_torch_free() -> None:
    code = ("import sys, time; t = time.perf_counter(); import nads.cli; nads.cli.build_app(); "
            "assert 'torch' not in sys.modules; print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 2.0
    help_ = subprocess.run([NADS_BIN, "--help"], capture_output=True, text=True, timeout=60)
    for verb in ("submit", "status", "wait", "download", "ls", "cancel", "catalog", "arch",
                 "compute", "serve", "admin", "export"):
        assert verb in help_.stdout

