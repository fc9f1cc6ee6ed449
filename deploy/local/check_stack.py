"""The compose stack checked from outside, as a user would (run by scripts/compose-check.sh).

Starts the stack with two worker containers, creates a key with the documented command, runs a
LeNet NAD job sharded over both workers and compares its arrays bitwise with `estimate_nads` on
the same spec computed here, kills both workers in the middle of a second job, which must give
the same arrays (one by `docker kill`, a manual stop that Docker never restarts; the other by
SIGKILL of its main process, a crash, which the restart policy must restart), takes the stack
down and up again (users, keys, jobs and blobs kept), and reads /readyz, /metrics, the web page
and Flower. Every step is timed into the report. Exits non-zero at the first failed check.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import torch

from nadcore import estimate_nads
from nads.client import Client

API = f"http://127.0.0.1:{os.environ.get('NADS_LOCAL_API_PORT', '18000')}"
FLOWER = f"http://127.0.0.1:{os.environ.get('NADS_LOCAL_FLOWER_PORT', '15555')}"
PORTS = {name: int(os.environ.get(f"NADS_LOCAL_{name}_PORT", default))
         for name, default in [("PG", 15432), ("REDIS", 16379), ("API", 18000), ("FLOWER", 15555)]}
# Two shards of LeNets, long enough to kill the workers in the middle: 100 networks (50 a
# shard) take minutes on a loaded 2-core machine; NADS_CHECK_NETWORKS sets more on a quiet one.
SPEC: dict[str, Any] = {"architecture": "lenet", "input_shape": [1, 32, 32],
                        "num_networks": int(os.environ.get("NADS_CHECK_NETWORKS", "100")),
                        "seed": 7, "shards": 2}


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.project = args.project
        self.compose_cmd = [*shlex.split(args.compose), "-p", args.project,
                            "-f", args.compose_file]
        self.report = open(args.report, "a")  # noqa: SIM115 - kept open for the whole run

    def note(self, line: str) -> None:
        print(f"check_stack: {line}", file=sys.stderr, flush=True)
        self.report.write(line + "\n")
        self.report.flush()

    def fail(self, why: str) -> None:
        self.note(f"FAILED: {why}")
        for service in ("api", "worker", "beat", "migrate"):
            logs = self.compose("logs", "--no-color", "--tail", "40", service, check=False)
            print(logs, file=sys.stderr)
        raise SystemExit(1)

    def compose(self, *args: str, check: bool = True, timeout: float = 900) -> str:
        proc = subprocess.run([*self.compose_cmd, *args], capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            self.fail(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr[-2000:]}")
        return proc.stdout + proc.stderr

    def docker(self, *args: str) -> str:
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            self.fail(f"docker {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def workers(self) -> list[str]:
        """Ids of the worker containers, running or not."""
        out = self.docker("ps", "-a", "-q", "--no-trunc", "--filter",
                          f"label=com.docker.compose.project={self.project}",
                          "--filter", "label=com.docker.compose.service=worker")
        return sorted(out.split())

    def wait_for(self, what: str, ok: Callable[[], bool], timeout: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                if ok():
                    return time.monotonic() - t0
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(1)
        self.fail(f"{what}: not within {timeout:.0f} s")
        return timeout

    def up(self, label: str) -> None:
        t0 = time.monotonic()
        self.compose("up", "-d", "--scale", "worker=2", timeout=1200)
        self.wait_for("/readyz", lambda: httpx.get(f"{API}/readyz", timeout=5).status_code == 200,
                      600)
        self.wait_for("two workers answering", lambda: len(self.worker_names()) == 2, 300)
        self.note(f"{label}: API ready and 2 workers answering after "
                  f"{time.monotonic() - t0:.0f} s")

    def worker_names(self) -> list[str]:
        """The shard workers answering (not the validation lane, validator@<host>)."""
        out = self.compose("exec", "-T", "beat", "celery", "-A", "worker.app", "inspect",
                           "ping", "--timeout", "5", check=False, timeout=60)
        return sorted(n for n in set(re.findall(r"->\s+(\S+): OK", out))
                      if n.startswith("worker-"))

    def container_of(self, worker_name: str) -> str:
        """The local override names each worker after its container: worker-<id>@host."""
        short = worker_name.split("@")[0].removeprefix("worker-")
        found = [c for c in self.workers() if c.startswith(short)]
        if len(found) != 1:
            self.fail(f"no single worker container has the id of {worker_name}: {found}")
        return found[0]

    def restart_count(self, container: str) -> int:
        return int(self.docker("inspect", "-f", "{{.RestartCount}}", container))

    def shard_workers(self, job_id: str) -> list[tuple[int, str, int]]:
        out = self.compose(
            "exec", "-T", "postgres", "psql", "-U", "nads", "-d", "nads", "-At", "-F", " ", "-c",
            "select s.index, s.worker, s.attempts from shards s join jobs j on j.pk = s.job_pk "
            f"where j.id = '{job_id}' order by s.index")
        rows = [line.split() for line in out.strip().splitlines() if line.strip()]
        return [(int(i), w, int(a)) for i, w, a in rows]


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def run_job(check: Check, client: Client, key: str, kill: bool) -> tuple[str, Any, float]:
    """Submits SPEC with the documented CLI; with `kill`, kills the worker running shard 0 once
    both shards are under way. Returns the job id, its arrays and its wall time."""
    env = {**os.environ, "NADS_URL": API, "NADS_KEY": key}
    t0 = time.monotonic()
    out = subprocess.run(
        [".venv/bin/nads", "submit", "nads", "--arch", "lenet", "--networks",
         str(SPEC["num_networks"]), "--shards", str(SPEC["shards"]), "--set",
         f"seed={SPEC['seed']}", "--set", "input_shape=[1,32,32]"],
        capture_output=True, text=True, env=env, timeout=60)
    if out.returncode != 0:
        check.fail(f"nads submit: {out.stdout} {out.stderr}")
    job_id = out.stdout.split()[0]

    def both_running() -> bool:
        job = client.status(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            if kill:
                check.fail(f"job {job_id} finished ({job.status}) before the workers were killed")
            return True  # ran too fast to be seen running; where its shards ran is read below
        return all(s["status"] == "running" for s in job.raw["shards"])

    check.wait_for(f"job {job_id}: both shards running at once", both_running, 600)
    if kill:
        running = check.shard_workers(job_id)
        names = [w for _, w, _ in running]
        if len(set(names)) != 2:
            check.fail(f"job {job_id}: shards not on two workers: {running}")
        stopped, crashed = (check.container_of(name) for name in names)
        restarts = {c: check.restart_count(c) for c in (stopped, crashed)}
        # `docker kill`: Docker records a manual stop, which no restart policy undoes.
        check.docker("kill", stopped)
        # A crash (what the OOM killer or a segfault does): the container's main process is
        # SIGKILLed from outside; the restart policy applies.
        os.kill(int(check.docker("inspect", "-f", "{{.State.Pid}}", crashed)), signal.SIGKILL)
        killed_at = time.monotonic()
        check.note(f"job {job_id} at {killed_at - t0:.0f} s: `docker kill` of worker container "
                   f"{stopped[:12]} (shard 0) and SIGKILL of the main process of {crashed[:12]} "
                   f"(shard 1)")
        back = check.wait_for(
            "the crashed worker restarted by its restart policy",
            lambda: check.restart_count(crashed) > restarts[crashed]
            and check.docker("inspect", "-f", "{{.State.Running}}", crashed) == "true", 180)
        state = check.docker("inspect", "-f", "{{.State.Status}} {{.RestartCount}}", stopped)
        check.note(f"restart policy (unless-stopped): {crashed[:12]} running again {back:.0f} s "
                   f"after its crash (RestartCount {restarts[crashed]} -> "
                   f"{check.restart_count(crashed)}); {stopped[:12]} after docker kill: {state} "
                   "(a manual stop: Docker does not restart it)")
    job = client.wait(job_id, timeout=1200)
    wall = time.monotonic() - t0
    if job.status != "succeeded":
        check.fail(f"job {job_id}: {job.status}: {job.raw.get('error')}")
    workers = check.shard_workers(job_id)
    check.note(f"job {job_id}: succeeded in {wall:.0f} s; shards (index, worker, attempts): "
               f"{workers}")
    if not kill and len({w for _, w, _ in workers}) != 2:
        check.fail(f"job {job_id}: its shards did not run on two workers: {workers}")
    return job_id, client.nads(job_id), wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", required=True)
    parser.add_argument("--compose-file", required=True)
    parser.add_argument("--compose", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    check = Check(args)

    check.compose("down", "-v", "--remove-orphans")
    for name, port in PORTS.items():
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
        except httpx.ConnectError:
            continue
        except httpx.HTTPError:
            pass
        check.fail(f"port {port} (NADS_LOCAL_{name}_PORT) is already taken on 127.0.0.1")
    check.up("first start (migrations, shipped catalog)")

    out = check.compose("run", "--rm", "migrate", "nads", "admin", "create-key", "--name", "alice")
    found = re.search(r"created API key for alice: (nads_\S+)", out)
    if found is None:
        check.fail(f"create-key printed no key: {out}")
    key = found.group(1)
    check.note("key: `docker-compose run --rm migrate nads admin create-key --name alice`")
    client = Client(API, key)

    job_a, arrays_a, wall_a = run_job(check, client, key, kill=False)
    torch.set_num_threads(1)  # the workers' layout here: one single-thread process per container
    t0 = time.monotonic()
    ref = estimate_nads("lenet", (1, 32, 32), num_networks=SPEC["num_networks"],
                        seed=SPEC["seed"])
    check.note(f"estimate_nads on the same spec here (1 thread): {time.monotonic() - t0:.0f} s")
    for name, got, want in [("nads", arrays_a.nads, ref.nads),
                            ("eigenvalues", arrays_a.eigenvalues, ref.eigenvalues)]:
        if got.dtype != want.dtype or got.shape != want.shape or not np.array_equal(got, want):
            diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
            check.fail(f"job {job_a} {name}: not bitwise estimate_nads's (max |diff| {diff:.3g})")
    check.note(f"job {job_a}: nads.npy {arrays_a.nads.shape} and eigenvalues bitwise equal to "
               f"estimate_nads (sha256 of nads {sha256(arrays_a.nads)[:16]})")

    job_b, arrays_b, wall_b = run_job(check, client, key, kill=True)
    if not (np.array_equal(arrays_b.nads, arrays_a.nads)
            and np.array_equal(arrays_b.eigenvalues, arrays_a.eigenvalues)):
        check.fail(f"job {job_b} (a worker killed): arrays differ from job {job_a}'s")
    check.note(f"job {job_b} (both workers killed mid-job): arrays bitwise those of job {job_a}")
    check.up("`docker-compose up -d --scale worker=2` after the kill (starts the stopped worker)")
    files_before = {name: client_download_sha(client, job_a, name)
                    for name in ("nads.npy", "eigenvalues.npy", "eval_point.npy")}

    t0 = time.monotonic()
    check.compose("down")
    check.note(f"docker-compose down: {time.monotonic() - t0:.0f} s")
    check.up("up again after down")
    listed = {job.id: job.status for job in client.jobs(kind="nads")}
    if listed.get(job_a) != "succeeded" or listed.get(job_b) != "succeeded":
        check.fail(f"after down/up the jobs are {listed}")
    files_after = {name: client_download_sha(client, job_a, name) for name in files_before}
    if files_after != files_before:
        check.fail(f"after down/up the artifacts changed: {files_before} -> {files_after}")
    check.note("after down/up: the key works (user and key kept), both jobs listed as succeeded, "
               "artifacts downloaded again with the same sha256 (blobs kept)")

    ready = httpx.get(f"{API}/readyz", timeout=10)
    metrics = httpx.get(f"{API}/metrics", timeout=10, headers={
        "Authorization": f"Bearer {os.environ.get('NADS_METRICS_TOKEN', '')}"})
    page = httpx.get(f"{API}/", timeout=10)
    script = httpx.get(f"{API}/web/app.js", timeout=10)
    succeeded = re.search(r'nads_jobs\{kind="nads",state="succeeded"\} (\S+)', metrics.text)
    if ready.status_code != 200 or metrics.status_code != 200 or succeeded is None \
            or float(succeeded.group(1)) < 2 or page.status_code != 200 \
            or "<html" not in page.text.lower() or script.status_code != 200:
        check.fail(f"readyz {ready.status_code}, metrics {metrics.status_code} "
                   f"({succeeded and succeeded.group(0)}), page {page.status_code}, "
                   f"app.js {script.status_code}")
    check.note(f"/readyz 200 {ready.text.strip()[:120]}; /metrics 200 ({succeeded.group(0)}); "
               f"/ 200 ({len(page.text)} bytes of HTML), /web/app.js 200")

    names = check.worker_names()

    # Flower 2's JSON API answers 401 unless FLOWER_UNAUTHENTICATED_API is set; its page does not.
    def flower_lists_workers() -> bool:
        page = httpx.get(f"{FLOWER}/workers", timeout=30)
        return page.status_code == 200 and all(name in page.text for name in names)

    check.wait_for("Flower listing the workers", flower_lists_workers, 120)
    check.note(f"Flower's /workers page lists the workers {names}")
    check.note(json.dumps({"job_wall_s": round(wall_a), "job_with_kill_wall_s": round(wall_b)}))
    if not args.keep:
        check.compose("down", "-v")
        check.note("stack removed (docker-compose down -v)")
    check.note("PASS")


def client_download_sha(client: Client, job_id: str, name: str) -> str:
    return hashlib.sha256(client.artifact(job_id, name)).hexdigest()


if __name__ == "__main__":
    main()
