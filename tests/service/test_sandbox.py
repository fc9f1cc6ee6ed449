"""Uploaded models as an attacker would write them, each a real upload through the API to a real
worker (tests/hostile_models.py).

Layer one (nadcore.uploaded.untrusted) refuses what is not a plain network before loading it; the
tests marked `layer two` run a second service whose worker has that layer switched off
(NADS_UNSAFE_SKIP_ARCHIVE_CHECKS, a test-only setting) to show that the sandbox alone still
contains the model: no secret read, nothing written outside its scratch, no network. Models
that are plain networks but spin, allocate or turn NaN only at a job's inputs pass validation;
the job then ends within seconds of a cancel, fails naming the memory limit, or fails naming
the non-finite values, and the worker serves the next job.

Run with NADS_TEST_REDIS_DB set to a Redis database of its own.
"""

from __future__ import annotations

import contextlib
import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.main import create_app
from nadcore import subspace_overlap
from nads.export_command import export_architecture
from store.migrate import upgrade
from store.settings import Settings
from tests.bad_models import scripted_bytes
from tests.hostile_models import (
    SHAPE,
    AllocatesAtJobInputs,
    NaNAtJobInputs,
    PreHookReads,
    ReadsFile,
    SetsState,
    SpinsAtJobInputs,
    WritesFile,
    continued_setstate_torchscript,
    duplicate_code_torchscript,
    duplicate_weights_config_pt2,
    lenet_pt2,
    pickled_weight_pt2,
    slow_expression_pt2,
)
from tests.hostile_zips import many_entries_zip
from tests.listener import Listener
from tests.support import (
    ServerThread,
    celery_worker,
    keyed_client,
    new_key,
    reference,
    wait_for_job,
)

pytestmark = pytest.mark.slow
CANARY = "canary-secret-of-the-worker"  # in the worker's environment
UNCHECKED_WORKER: list[int] = []  # the pid of the `unchecked` service's Celery worker
JOB = {"input_shape": list(SHAPE), "num_networks": 4, "method": "finite_difference",
       "scale": 100.0}


def upload(client: httpx.Client, data: bytes, filename: str) -> dict:
    r = client.post("/v1/architectures", data={"name": filename.split(".")[0],
                                               "input_shape": ",".join(map(str, SHAPE))},
                    files={"file": (filename, data, "application/octet-stream")})
    assert r.status_code == 201, r.text
    arch_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while (row := client.get(f"/v1/architectures/{arch_id}").json())["status"] == "validating":
        assert time.monotonic() < deadline, row
        time.sleep(0.2)
    return row


def _payload(secret: Path, written: Path, port: int) -> str:
    """Python that a pickled weight runs: read a secret, write outside scratch, connect out with
    a real socket, write a host sysctl (its own value back), read pid 1's environment (bwrap's,
    once the worker's), then raise what it got (the rejection reason is the channel it would
    exfiltrate through). Everything it uses it imports inside the attempts: exec'd code's
    lambdas see only builtins, and a NameError must not pass for a refusal."""
    return f"""
got = []
for attempt in (lambda: open({str(secret)!r}).read(),
                lambda: open({str(written)!r}, 'w').write('owned'),
                lambda: __import__('socket').create_connection(('127.0.0.1', {port}),
                                                               timeout=2),
                lambda: open('/proc/sys/kernel/core_pattern', 'w').write(
                    open('/proc/sys/kernel/core_pattern').read()),
                lambda: 'environ:' + open('/proc/1/environ').read().replace(chr(0), ' ')):
    try:
        got.append(repr(attempt()))
    except Exception as exc:
        got.append(type(exc).__name__)
raise ValueError('got ' + ' '.join(got))  # torch.export.load swallows RuntimeError
"""


@pytest.fixture(scope="module")
def lenet_archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A plain LeNet .pt2 (torch.export takes seconds): the base the hostile ones rewrite."""
    return lenet_pt2(tmp_path_factory.mktemp("lenet"))


# -- layer one, with the service's own worker -----------------------------------------------
@pytest.mark.usefixtures("worker")
def test_pickled_weights_are_refused_and_nothing_runs(alice: httpx.Client, tmp_path: Path,
                                                      lenet_archive: bytes) -> None:
    marker = tmp_path / "ran"
    data = pickled_weight_pt2(lenet_archive, f"open({str(marker)!r}, 'w').write('x')")
    row = upload(alice, data, "pickled.pt2")
    assert row["status"] == "rejected", row
    assert "pickled or custom object" in row["reason"]
    assert not marker.exists()


@pytest.mark.usefixtures("worker")
def test_file_access_is_refused_before_running(alice: httpx.Client, settings: Settings,
                                               tmp_path: Path) -> None:
    secret = settings.data_dir / "secret-for-test"
    secret.write_text("s3cr3t")
    written = settings.data_dir / "written-by-model"
    for model in (ReadsFile(str(secret), 6), WritesFile(str(written))):
        row = upload(alice, scripted_bytes(model), "files.pt")
        assert row["status"] == "rejected", row
        assert "'aten::from_file'" in row["reason"], row["reason"]
        assert "stolen" not in row["reason"]
    assert not written.exists()


def refused_upload(client: httpx.Client, data: bytes, filename: str) -> str:
    """The 422 message of an upload the API refuses in its own request."""
    r = client.post("/v1/architectures", data={"name": "refused",
                                               "input_shape": ",".join(map(str, SHAPE))},
                    files={"file": (filename, data, "application/octet-stream")})
    assert r.status_code == 422, r.text
    assert all(row["name"] != "refused" for row in client.get("/v1/architectures").json()["items"])
    return r.json()["detail"][0]["msg"]


@pytest.mark.usefixtures("worker")
def test_archives_that_readers_disagree_on_are_refused_at_upload(
        alice: httpx.Client, tmp_path: Path, lenet_archive: bytes) -> None:
    """Issue 25: a weights config stored twice (the forged copy first, which torch's reader
    took), a TorchScript code file stored twice (the copy defining __setstate__ first), and a
    zip of 500,000 entries (45 MB) never reach a worker: the strict reader refuses them in the
    upload's request, the last from its end records alone."""
    canary = tmp_path / "ran"
    msg = refused_upload(alice, duplicate_weights_config_pt2(
        lenet_archive, f"open({str(canary)!r}, 'w').write('x')"), "dup.pt2")
    assert "model_weights_config.json' twice" in msg, msg
    msg = refused_upload(alice, duplicate_code_torchscript(
        scripted_bytes(SetsState(str(canary)))), "dup.pt")
    assert "twice" in msg and ".py'" in msg, msg
    t0 = time.monotonic()
    msg = refused_upload(alice, many_entries_zip(500_000), "many.pt")
    assert "500,000 entries; at most 20,000" in msg, msg
    print(f"500,000-entry zip refused in {time.monotonic() - t0:.1f} s (upload included)")
    assert not canary.exists()


@pytest.mark.usefixtures("worker")
def test_code_the_text_scan_missed_is_refused_in_the_worker(
        alice: httpx.Client, settings: Settings, lenet_archive: bytes) -> None:
    """Issue 25: `def \\` + newline + `__setstate__`, a forward pre-hook on the top module that
    reads a file (its bytes came back in the rejection reason), and a size expression that
    sympy takes minutes to build: each is refused by layer one, naming what it found."""
    secret = settings.data_dir / "secret-for-hook"
    secret.write_text("s3cr3t")
    row = upload(alice, continued_setstate_torchscript(scripted_bytes(SetsState())), "cont.pt")
    assert row["status"] == "rejected", row
    assert "names __setstate__, which runs while loading" in row["reason"], row["reason"]

    row = upload(alice, scripted_bytes(PreHookReads(str(secret), 6)), "hook.pt")
    assert row["status"] == "rejected", row
    assert "'aten::from_file'" in row["reason"], row["reason"]
    assert "stolen" not in row["reason"] and "115, 51" not in row["reason"]  # b"s3"

    t0 = time.monotonic()
    row = upload(alice, slow_expression_pt2(lenet_archive), "slow.pt2")
    assert row["status"] == "rejected", row
    assert "symbolic size expression" in row["reason"], row["reason"]
    assert time.monotonic() - t0 < 60, "validation took as long as the expression would"


def _cancel_within(client: httpx.Client, job_id: str, seconds: float) -> float:
    deadline = time.monotonic() + 120
    while client.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(3)  # the model is spinning inside its forward pass by now
    t0 = time.monotonic()
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    while any(s["status"] == "running" for s in client.get(f"/v1/jobs/{job_id}").json()["shards"]):
        assert time.monotonic() - t0 < seconds, "the spinning shard was not stopped"
        time.sleep(0.1)
    return time.monotonic() - t0


@pytest.mark.usefixtures("worker")
def test_models_that_misbehave_only_at_job_inputs(alice: httpx.Client, settings: Settings
                                                  ) -> None:
    """Validation passes (N(0, I) inputs); the job's finite differences (scale 100) trigger."""
    rows = {name: upload(alice, scripted_bytes(cls()), f"{name}.pt") for name, cls in
            (("spin", SpinsAtJobInputs), ("alloc", AllocatesAtJobInputs),
             ("nan", NaNAtJobInputs))}
    assert all(r["status"] == "ready" for r in rows.values()), rows

    spin = alice.post("/v1/jobs/nads", json={**JOB, "architecture": {"id": rows["spin"]["id"]}})
    assert spin.status_code == 202, spin.text
    stopped = _cancel_within(alice, spin.json()["id"], 10)
    assert alice.get(f"/v1/jobs/{spin.json()['id']}").json()["status"] == "cancelled"

    alloc = alice.post("/v1/jobs/nads", json={**JOB, "architecture": {"id": rows["alloc"]["id"]}})
    job = wait_for_job(alice, alloc.json()["id"], timeout=180)
    assert job["status"] == "failed", job
    limit = f"{settings.sandbox_memory_bytes:,}"  # the default: 8 GiB
    assert "memory limit" in job["error"] and limit in job["error"], job["error"]

    nan = alice.post("/v1/jobs/nads", json={**JOB, "architecture": {"id": rows["nan"]["id"]}})
    job = wait_for_job(alice, nan.json()["id"], timeout=180)
    assert job["status"] == "failed", job
    assert "not finite" in job["error"], job["error"]

    # the worker serves the next job
    ok = alice.post("/v1/jobs/nads", json={**JOB, "architecture": "lenet"})
    assert wait_for_job(alice, ok.json()["id"], timeout=180)["status"] == "succeeded"
    print(f"spinning shard stopped {stopped:.1f} s after the cancel")


# -- layer two alone: a second service whose worker skips layer one ------------------------------
@pytest.fixture(scope="module")
def unchecked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Settings]]:
    """An embedded service (SQLite, filesystem broker) whose worker loads archives without
    nadcore.uploaded.untrusted's checks: only the sandbox stands between a model and the service."""
    data = tmp_path_factory.mktemp("unchecked")
    settings = Settings(data_dir=data, unsafe_skip_archive_checks=True, progress_interval_s=0.2)
    upgrade(settings.resolved_database_url)
    key = new_key(settings, f"mallory-{uuid.uuid4().hex[:6]}")
    with celery_worker(settings, NADS_UNSAFE_SKIP_ARCHIVE_CHECKS="true",
                       AWS_SECRET_ACCESS_KEY=CANARY) as worker, \
            ServerThread(create_app(settings)) as server, \
            keyed_client(server.url, key) as client:
        UNCHECKED_WORKER.append(worker.pid)
        yield client, settings


def test_layer_two_stops_file_reads_and_writes(unchecked: tuple[httpx.Client, Settings]
                                               ) -> None:
    client, settings = unchecked
    secret = settings.data_dir / "local-api-key-copy"
    secret.write_text("s3cr3t")
    row = upload(client, scripted_bytes(ReadsFile(str(secret), 6)), "reads.pt")
    assert row["status"] == "rejected", row
    assert "stolen" not in row["reason"] and "115, 51" not in row["reason"]  # b"s3"
    assert "unable to open file" in row["reason"], row["reason"]  # it is not there

    written = settings.data_dir / "written-by-model"
    written.write_bytes(b"\0" * 16)
    row = upload(client, scripted_bytes(WritesFile(str(written))), "writes.pt")
    assert written.read_bytes() == b"\0" * 16, "the model wrote outside its scratch"
    assert row["status"] == "rejected", row


def test_layer_two_stops_code_from_a_pickle(unchecked: tuple[httpx.Client, Settings],
                                            lenet_archive: bytes) -> None:
    client, settings = unchecked
    secret = settings.data_dir / "secret-for-pickle"
    secret.write_text("s3cr3t")
    written = settings.data_dir / "written-by-pickle"
    listener = Listener()
    try:
        data = pickled_weight_pt2(lenet_archive, _payload(secret, written, listener.port))
        row = upload(client, data, "pickled.pt2")
    finally:
        listener.close()
    assert row["status"] == "rejected", row
    reason = row["reason"]
    # the payload ran (layer one was off) and every attempt failed inside the sandbox: the
    # secret is not there, nothing is writable, the network is unreachable (an OSError, not a
    # NameError), /proc/sys is read-only, and pid 1 is the model itself with the sandbox's
    # environment only
    assert "got FileNotFoundError" in reason, reason
    attempts = reason.split("got ", 1)[1].split()
    assert attempts[1] == "FileNotFoundError", reason
    assert attempts[2] in ("OSError", "ConnectionRefusedError"), reason
    assert attempts[3] == "OSError", reason
    assert "environ:PATH=/usr/bin:/bin HOME=/tmp" in reason, reason  # excerpted
    assert "s3cr3t" not in reason and CANARY not in reason and "NADS_" not in reason
    assert not written.exists()
    assert listener.accepted == 0, "the model reached the network"


# -- real networks still pass -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.usefixtures("worker")
def test_every_builtin_uploaded_gives_the_builtins_nads(
        alice: httpx.Client, tmp_path: Path) -> None:
    """The five built-ins, uploaded, pass both layers inside the sandbox and draw the
    built-in's networks: the NADs of the same spec agree with the built-in's (3 networks,
    autograd: 2 NADs, whose eigenvalues are distinct, so the subspace is determined to
    rounding). Each architecture goes in one format, the formats alternating so that each
    loader meets a large network inside the sandbox's limits (resnet18 scripted, densenet121
    exported); that every built-in loads both ways is tests/nadcore/uploaded/test_untrusted.py's
    (in-process, the same loader), and both ways through the service
    tests/service/test_architectures_e2e.py (LeNet). All ten uploads took 265 s of the suite."""
    shape = [1, 32, 32]
    spec = {"input_shape": shape, "num_networks": 3, "method": "autograd", "seed": 1}
    rows = {}
    for arch, suffix in (("logreg", "pt2"), ("lenet", "pt"), ("vgg11", "pt2"),
                         ("resnet18", "pt"), ("densenet121", "pt2")):
        path = export_architecture(arch, tuple(shape), tmp_path / f"{arch}.{suffix}")
        r = alice.post("/v1/architectures", data={"name": arch, "input_shape": "1,32,32"},
                       files={"file": (path.name, path.read_bytes())})
        assert r.status_code == 201, r.text
        rows[arch, suffix] = r.json()["id"]
    jobs = {}
    for (arch, suffix), arch_id in rows.items():  # each job queued once its upload is ready
        deadline = time.monotonic() + 300
        while (row := alice.get(f"/v1/architectures/{arch_id}").json())["status"] == \
                "validating":
            assert time.monotonic() < deadline, row
            time.sleep(0.5)
        assert row["status"] == "ready", (arch, suffix, row["reason"])
        r = alice.post("/v1/jobs/nads", json={**spec, "architecture": {"id": arch_id}})
        assert r.status_code == 202, r.text
        jobs[arch, suffix] = r.json()["id"]
    # the paper's loop on the built-ins, in this process while the worker runs the jobs
    want = {arch: reference({**spec, "architecture": arch}) for arch, _ in rows}
    for (arch, suffix), job_id in jobs.items():
        job = wait_for_job(alice, job_id, timeout=300)
        assert job["status"] == "succeeded", (arch, suffix, job)
        got = {name: np.load(io.BytesIO(alice.get(
            f"/v1/jobs/{job['id']}/artifacts/{name}.npy").content))
            for name in ("nads", "eigenvalues")}
        np.testing.assert_allclose(got["eigenvalues"], want[arch]["eigenvalues"], rtol=1e-3)
        assert subspace_overlap(got["nads"], want[arch]["nads"], 2) > 0.999, (arch, suffix)


BOMB_CHUNKS = 12  # of 64 MiB: 768 MiB of zeros, 0.75 MB deflated, within the frame's bound
# Sent by a model whose pickled weight runs this as the sandboxed child (layer one off): at
# validation a forged report (so that the architecture becomes ready), at a shard a result that
# inflates 1,000-fold on the child's answer pipe (the 3.1 MB one took a worker from
# 384 MiB to 3,461 MiB, and it kept them; a frame that long is now refused by its length).
_BOMB = f"""
import io, json, os, struct, sys, zipfile
if json.load(open('/job/request.json'))['task'] == 'validate':
    kind, payload = b'I', json.dumps({{'num_outputs': 10, 'num_params': 1, 'state_entries': 1,
                                      'format': 'export', 'flops': 1}}).encode()
else:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED) as z:
        with z.open('gradients.npy', 'w', force_zip64=True) as member:
            chunk = bytes(64 << 20)
            for _ in range({BOMB_CHUNKS}):
                member.write(chunk)
    kind, payload = b'R', buf.getvalue()
frame = memoryview(kind + struct.pack('>I', len(payload)) + payload)
while frame:  # on the answer pipe, whose number is the child's last argument
    frame = frame[os.write(int(sys.argv[2]), frame):]
os._exit(0)
"""


def _pool_peaks(pid: int) -> dict[int, int]:
    """VmHWM (peak resident bytes) of each of the Celery worker's pool processes."""
    import psutil

    peaks = {}
    for child in psutil.Process(pid).children():
        with contextlib.suppress(OSError, psutil.Error):
            status = Path(f"/proc/{child.pid}/status").read_text()
            peaks[child.pid] = int(next(line for line in status.splitlines()
                                        if line.startswith("VmHWM:")).split()[1]) * 1024
    return peaks


def test_layer_two_result_that_inflates_is_refused_and_the_worker_keeps_its_memory(
        unchecked: tuple[httpx.Client, Settings], lenet_archive: bytes) -> None:
    client, _ = unchecked
    row = upload(client, pickled_weight_pt2(lenet_archive, _BOMB), "bomb.pt2")
    assert row["status"] == "ready", row["reason"]  # the forged report: layer one is off
    before = _pool_peaks(UNCHECKED_WORKER[0])
    r = client.post("/v1/jobs/nads", json={**JOB, "architecture": {"id": row["id"]}})
    assert r.status_code == 202, r.text
    job = wait_for_job(client, r.json()["id"], timeout=300)
    assert job["status"] == "failed", job
    assert "refused result" in job["error"] and "declare" in job["error"], job["error"]
    after = _pool_peaks(UNCHECKED_WORKER[0])
    grown = {pid: after[pid] - before.get(pid, 0) for pid in after}
    assert max(grown.values()) < 256 << 20, grown  # 768 MiB would have shown


# Run by a pickled weight at validation (layer one off): two processes each map and touch
# 1,280 MiB of MAP_SHARED | MAP_ANONYMOUS memory, which no rlimit counts together (RLIMIT_DATA
# leaves shared mappings out, RLIMIT_AS is per process, and a GPU worker sets none): 2.5 GiB
# against validation's 2 GiB. Where it lives, its rejection reason says so.
_SHARED_MEMORY = """
import mmap, os, time
SIZE = 1280 << 20
pid = os.fork()  # no function: exec'd code's functions see only builtins
m = mmap.mmap(-1, SIZE, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
for i in range(0, SIZE, 4096):
    m[i] = 1
if pid == 0:
    time.sleep(3); os._exit(0)
os.waitpid(pid, 0)
raise ValueError('held 2560 MiB of shared memory')
"""


def test_layer_two_shared_memory_past_the_limit_is_a_memory_error(
        unchecked: tuple[httpx.Client, Settings], lenet_archive: bytes) -> None:
    """Issue 25: the sandbox's cgroup (worker/sandbox_cgroup.py) counts every process's shared
    memory; past the limit the kernel kills the sandbox, the upload is rejected naming the
    limit, the worker's own processes do not grow, and the cgroup is gone afterwards."""
    from worker.sandbox_cgroup import available, why_unavailable

    node = available()
    if node is None:
        pytest.skip(f"no cgroup per sandbox here: {why_unavailable()}")
    client, settings = unchecked
    log = (settings.data_dir / "worker.log").read_text()
    assert "sandbox bounds: a cgroup per sandbox" in log, log[-3000:]
    assert ("a CPU quota of its threads' cores" in log) == (node.cpu is not None), log[-3000:]
    before = _pool_peaks(UNCHECKED_WORKER[0])
    row = upload(client, pickled_weight_pt2(lenet_archive, _SHARED_MEMORY), "shared.pt2")
    assert row["status"] == "rejected", row
    limit = settings.architecture_validation_memory_bytes
    assert row["reason"].startswith(f"memory: the model used more than {limit >> 20:,} MiB, "
                                    f"the memory limit of {limit:,} bytes"), row["reason"]
    after = _pool_peaks(UNCHECKED_WORKER[0])
    assert max(after[pid] - before.get(pid, 0) for pid in after) < 256 << 20, (before, after)
    left = [child for folder in node.folders() for child in folder.iterdir()
            if child.name.split("-")[0] in {str(pid) for pid in after}]
    assert left == [], left
