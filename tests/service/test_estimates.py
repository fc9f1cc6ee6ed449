"""Run-time estimates from the fleet that exists (jobs/fleet.py, worker/calibrate.py), on the
real Postgres, Redis and Celery worker of the suite (2 CPU processes here): the worker records
its device and FLOP/s at its start and from its shards; a job gets its estimated run time in
the 202 (and in the CLI's output); the issue's `--arch resnet18 --networks 10000` is refused
with the estimate, why and what fits, and queued with accept_long; a fresh `nads serve` refuses
it too in its first seconds, before its workers have measured anything (assumed rates); a job
queued behind others says where it stands and when it should start (jobs/queue_wait.py); a
torchvision model's cost is counted once by the worker and estimated and refused like a
built-in's (jobs/architecture_costs.py)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from jobs.fleet import connected_workers
from store.db import session_scope
from store.models import ArchitectureCost, Worker
from store.settings import Settings
from tests.support import (
    NADS_BIN,
    cancel_once_running,
    clean_env,
    keyed_client,
    nads_serve,
    new_key,
    submit_job,
    wait_for_job,
)

SMALL = {"architecture": "lenet", "input_shape": [1, 32, 32], "num_networks": 24, "seed": 11,
         "shards": 2}
HUGE = {"architecture": "resnet18", "input_shape": [3, 32, 32], "num_networks": 10_000}
# Two shards of 10,000 LeNets, about an hour each here (1.7 GFLOP per network), that stop
# within a second when cancelled (a ResNet-18 network takes minutes: a cancelled shard of HUGE
# holds its process until the network ends)
LONG = {"architecture": "lenet", "input_shape": [1, 32, 32], "num_networks": 20_000,
        "shards": 2, "seed": 5}


def _calibrated(settings: Settings, timeout: float = 90) -> list[Worker]:
    """The suite's connected workers, once each has its calibration."""
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(settings.resolved_database_url) as session:
            fresh = connected_workers(session, settings)
            if fresh and all((w.throughput or {}).get("calibration") for w in fresh):
                session.expunge_all()
                return fresh
        assert time.monotonic() < deadline, "no worker calibrated"
        time.sleep(0.5)


def _first_connected(database_url: str, timeout: float = 120) -> Worker:
    """The first worker row that takes users' shards, polled every 0.1 s."""
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(database_url) as session:
            rows = [w for w in session.scalars(select(Worker))
                    if "gpu" in (w.queues or "").split(",")]
            if rows:
                session.expunge_all()
                return rows[0]
        assert time.monotonic() < deadline, "no worker connected"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_fresh_service_refuses_a_clearly_too_long_job_before_its_workers_calibrate(
        tmp_path: Path) -> None:
    """The issue's first job on a fresh `nads serve`, sent twice: the moment it answers, before
    any worker row exists (estimated on the CPU processes serve says it starts,
    `expected_cpu_processes`), and as soon as a worker is connected, before its calibration
    is recorded. Both are refused at the rates assumed for a CPU (jobs/fleet.py), not queued
    for days."""
    database_url = Settings(data_dir=tmp_path / "var").resolved_database_url
    with nads_serve(tmp_path, clean_env()) as serve, keyed_client(serve.url, serve.key) as client:
        at_once = client.post("/v1/jobs/nads", json=HUGE)
        first = _first_connected(database_url)
        connected = client.post("/v1/jobs/nads", json=HUGE)
    assert not (first.throughput or {}).get("calibration"), first.throughput
    for r in (at_once, connected):
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert detail["msg"].startswith("num_networks: the estimated run time, "), detail
        assert "exceeds the limit of 60.0 min (NADS_MAX_ESTIMATED_RUN_S)" in detail["msg"]
        assert "assumed" in detail["run"]["rates"], detail["run"]
        assert "assumed for a CPU until its calibration is measured" in detail["msg"], detail
        assert detail["fits"]["num_networks"] < 10_000, detail
        print(detail["msg"])


def test_workers_record_device_and_throughput_and_jobs_get_an_estimate(
        worker: subprocess.Popen, settings: Settings, alice: httpx.Client) -> None:
    workers = _calibrated(settings)
    for w in workers:
        assert w.device and w.gpus == 0 and w.processes >= 1, vars(w)
        assert "gpu" in w.queues.split(","), w.queues
        assert 1e7 < w.throughput["calibration"] < 1e13, w.throughput  # FLOP/s of one process
    job = submit_job(alice, SMALL, "/v1/jobs/nads")
    run = job["estimate"]["run"]
    assert run["run_s"] > 0 and run["gpu"] is False, run
    assert "CPU process" in run["basis"] and "no GPU worker connected" in run["basis"], run
    assert job["progress"]["eta_s"] is not None, job["progress"]
    done = wait_for_job(alice, job["id"], timeout=240)
    assert done["status"] == "succeeded", done
    actual = done["timings"]["run_s"]
    print(f"estimate {run['run_s']} s, ran {actual:.1f} s ({run['basis']})")
    # The right order of magnitude, not more: the rate was measured (calibration, then the
    # suite's earlier shards) while other tests loaded these two shared cores, where one
    # process's speed varies about tenfold with what runs beside it (in the two-process suite
    # this estimate said 22.8 s for a 2.5 s run; a LeNet probe test ran 27 s or 294 s).
    # Within a factor of 20 either way, plus the merge and database round trips (10 s).
    assert run["run_s"] / 20 < actual < run["run_s"] * 20 + 10, (run, actual)
    with session_scope(settings.resolved_database_url) as session:
        rates = [w.throughput.get("nads") for w in session.scalars(select(Worker))
                 if w.throughput]
    assert any(rates), "no shard recorded its throughput"


def test_a_job_too_long_for_the_fleet_is_refused_with_why_and_what_fits(
        worker: subprocess.Popen, settings: Settings, alice: httpx.Client) -> None:
    _calibrated(settings)
    r = alice.post("/v1/jobs/nads", json=HUGE)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    msg = detail["msg"]
    assert msg.startswith("num_networks: the estimated run time, "), msg
    assert "exceeds the limit of 60.0 min (NADS_MAX_ESTIMATED_RUN_S)" in msg, msg
    assert "CPU process" in msg and "no GPU worker connected" in msg, msg
    assert "accept_long=true" in msg and "or a GPU worker" in msg, msg
    assert detail["run"]["run_s"] > 3600 and 0 <= detail["fits"]["num_networks"] < 10_000
    print(msg)

    accepted = alice.post("/v1/jobs/nads", json=HUGE, params={"accept_long": "true"})
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert job["estimate"]["run"]["accepted_long"] is True
    assert job["estimate"]["run"]["run_s"] == detail["run"]["run_s"]
    assert alice.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    wait_for_job(alice, job["id"], until=("cancelled",))


def test_workers_say_whether_they_emulate_bf16_and_a_bf16_job_is_timed_by_it(
        worker: subprocess.Popen, settings: Settings, alice: httpx.Client) -> None:
    """Each worker's calibration records whether its device computes bf16 in hardware, as
    torch sees it here; a bf16 job on workers that emulate it is estimated slower than the same
    job in fp32 (jobs/fleet.py), and its refusal says that fp32 runs faster."""
    import torch

    from nadcore.nads.precision import native_bf16

    workers = _calibrated(settings)
    here = native_bf16(torch.device("cpu"))
    assert [w.native_bf16 for w in workers] == [here] * len(workers), [vars(w) for w in workers]
    fp32 = alice.post("/v1/jobs/nads", json=HUGE).json()["detail"]
    bf16 = alice.post("/v1/jobs/nads", json=HUGE | {"precision": "bf16"}).json()["detail"]
    measured = any((w.throughput or {}).get("nads:bf16") for w in workers)
    if here is False and not measured:
        assert bf16["run"]["run_s"] > 10 * fp32["run"]["run_s"], (bf16["run"], fp32["run"])
        assert "emulate bf16" in bf16["run"]["basis"], bf16["run"]
        assert "or precision fp32 (bf16 is emulated" in bf16["msg"], bf16["msg"]
    else:  # native (or untold): timed like fp32 until a bf16 shard says otherwise
        assert "emulate bf16" not in bf16["run"]["basis"], bf16["run"]
    print(bf16["msg"])


def _until_running(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    """The job once every shard of it runs."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if all(s["status"] == "running" for s in job["shards"]):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def test_a_job_behind_others_says_its_place_and_its_wait(
        worker: subprocess.Popen, settings: Settings, alice: httpx.Client, bob: httpx.Client,
        api_url: str, browser: object) -> None:
    """Alice's long job holds both of the worker's processes; Bob's small job is queued
    behind it: 1st in line, 2 shards ahead, starting when the first of Alice's shards ends
    (an hour or so at the measured rates), and its time left counts that wait (the issue:
    "queue wait not included"). The CLI's status line and the job's web page say the same."""
    _calibrated(settings)
    long = submit_job(alice, LONG, "/v1/jobs/nads?accept_long=true")
    try:
        running = _until_running(alice, long["id"])
        assert running["queue"]["position"] == 0, running["queue"]
        queued = submit_job(bob, SMALL, "/v1/jobs/nads")
        try:
            assert queued["status"] == "queued", queued
            place = queued["queue"]
            assert place["position"] == 1 and place["shards_ahead"] == 2, place
            run_s = queued["estimate"]["run"]["run_s"]
            assert place["wait_s"] > 600, place  # its two shards then run side by side
            assert place["done_s"] == pytest.approx(place["wait_s"] + run_s, abs=1), place
            assert queued["progress"]["eta_s"] == place["done_s"], queued["progress"]
            message = queued["progress"]["message"]
            assert message.startswith("queued: 1st in line, 2 shards ahead, starts in about "
                                      ), message
            again = bob.get(f"/v1/jobs/{queued['id']}").json()
            assert again["queue"]["position"] == 1, again["queue"]
            env = {"PATH": str(Path(sys.executable).parent), "NADS_URL": api_url,
                   "NADS_KEY": bob.headers["Authorization"].split()[-1]}
            shown = subprocess.run([NADS_BIN, "status", queued["id"]], env=env,
                                   capture_output=True, text=True, timeout=60)
            assert "queued: 1st in line, 2 shards ahead" in shown.stdout, shown
            page = browser.new_page()
            try:  # the job's web page: its place among the facts
                page.goto(api_url + "/")
                page.fill("#api-key", env["NADS_KEY"])
                page.click("#key-form button[type=submit]")
                page.wait_for_selector("#jobs[data-loaded=true]")
                page.goto(f"{api_url}/#/jobs/{queued['id']}")
                page.wait_for_selector(".facts")
                facts = page.inner_text(".facts")
                assert "1st in line, 2 shards ahead, starts in" in facts, facts
            finally:
                page.close()
            print(message)
        finally:
            bob.post(f"/v1/jobs/{queued['id']}/cancel")
    finally:  # LeNets stop within a second of the cancel, and free the worker for the next test
        cancel_once_running(alice, long["id"])


def test_a_torchvision_model_is_counted_once_then_estimated_and_refused_like_a_built_in(
        worker: subprocess.Popen, settings: Settings, alice: httpx.Client) -> None:
    """The issue's first job with a torchvision ResNet-18: its first submission waits while the
    worker counts the builder at this shape (meta device, once), then it is refused past
    NADS_MAX_ESTIMATED_RUN_S like the built-in; a small one gets a run-time estimate; a builder
    that cannot take the shape is refused naming input_shape, before anything is queued."""
    _calibrated(settings)
    shape = [3, 36, 36]  # counted by no other test of the session
    big = {"architecture": "torchvision:resnet18", "input_shape": shape, "num_networks": 10_000}
    r = alice.post("/v1/jobs/nads", json=big)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["msg"].startswith("num_networks: the estimated run time, "), detail["msg"]
    assert "NADS_MAX_ESTIMATED_RUN_S" in detail["msg"], detail["msg"]
    assert detail["estimate"]["flops"] > 1e15 and detail["run"]["run_s"] > 3600, detail
    with session_scope(settings.resolved_database_url) as session:
        rows = session.scalars(select(ArchitectureCost).where(
            ArchitectureCost.architecture == "torchvision:resnet18",
            ArchitectureCost.input_shape == "3x36x36")).all()
        assert [(r.num_outputs, r.error) for r in rows] == [(1, None)]
        assert rows[0].macs > 1e7 and rows[0].params > 1e7
    small = submit_job(alice, big | {"num_networks": 2, "method": "autograd"}, "/v1/jobs/nads")
    assert small["estimate"]["flops"] > 0 and small["estimate"]["run"]["run_s"] > 0, small
    alice.post(f"/v1/jobs/{small['id']}/cancel")
    bad = alice.post("/v1/jobs/nads", json={"architecture": "torchvision:squeezenet1_1",
                                            "input_shape": [3, 8, 8], "num_networks": 4})
    assert bad.status_code == 422, bad.text
    msg = bad.json()["detail"][0]["msg"]
    assert msg.startswith("input_shape: torchvision:squeezenet1_1 cannot take an input of "
                          "shape 3x8x8: "), msg
    wait_for_job(alice, small["id"], until=("cancelled", "succeeded"))


def test_cli_prints_the_estimate_and_takes_accept_long(
        worker: subprocess.Popen, settings: Settings, api_url: str) -> None:
    _calibrated(settings)
    key = new_key(settings, f"carol-{uuid.uuid4().hex[:6]}")
    env = {"PATH": str(Path(sys.executable).parent), "NADS_URL": api_url, "NADS_KEY": key}
    args = [NADS_BIN, "submit", "nads", "--arch", "resnet18", "--input-shape", "3,32,32",
            "--networks", "10000"]
    refused = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "NADS_MAX_ESTIMATED_RUN_S" in refused.stderr, refused
    queued = subprocess.run([*args, "--accept-long"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.split()[0]
    assert "estimate: " in queued.stdout and "no GPU worker connected" in queued.stdout, \
        queued.stdout
    with keyed_client(api_url, key, timeout=5) as client:
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        wait_for_job(client, job_id, until=("cancelled",))
