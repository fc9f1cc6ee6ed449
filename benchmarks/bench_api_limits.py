"""What one client can make the API process hold (issue 25): other clients' /healthz latency
while one connection sends a 100 MiB request header, and the API's resident memory while 8
uploads of 45 MB each stream in at once.

    python benchmarks/bench_api_limits.py [--repo PATH] [--http PROTOCOL]

Starts the API of the checkout at `--repo` (default: this one) as `Dockerfile.api` does, in a
subprocess of its own (uvicorn, `--http api.serving:HeaderTimeoutProtocol`; `--http httptools`
for uvicorn's own protocol) on an embedded database in a temporary folder, and measures from
outside: the header attack's answer and how long it took, the latency of /healthz requests sent
one after another by another client meanwhile, then the API's RSS (sampled every 20 ms)
before and during 8 concurrent uploads (4 `.npz` datasets, 4 `.npy` NAD arrays) of 45 MB, then
8 concurrent architecture archives of 45 MB (TorchScript's layout, one large entry), then 8
concurrent zips of 420,000 empty entries (as the issue's: refused by the archive reader).
Prints JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil

HERE = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(repo: Path, data: Path, http: str) -> tuple[subprocess.Popen, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NADS_")} | {
        "NADS_DATA_DIR": str(data), "NADS_UPLOAD_RATE_PER_MINUTE": "0",
        "NADS_CATALOG_AUTOBUILD": "", "PYTHONPATH": str(repo)}
    python = sys.executable
    subprocess.run([python, "-m", "store.migrate"], cwd=repo, env=env, check=True)
    key = subprocess.run(
        [python, "-c", "from store.auth import create_key\nfrom store.db import session_scope\n"
         "from store.settings import get_settings\n"
         "with session_scope(get_settings().resolved_database_url) as s:\n"
         "    print(create_key(s, 'bench'))"],
        cwd=repo, env=env, check=True, capture_output=True, text=True).stdout.split()[-1]
    port = free_port()
    proc = subprocess.Popen(
        [python, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--http", http, "--log-level", "warning"], cwd=repo, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url, key
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the API did not start")
        time.sleep(0.2)


def header_attack(url: str, mib: int = 100) -> dict:
    port = int(url.rsplit(":", 1)[1])
    result: dict = {"sent_mib": 0.0}
    t0 = time.monotonic()

    def attack() -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Big: ")
            chunk = b"a" * 65536
            try:
                for _ in range(mib * 16):
                    s.sendall(chunk)
                    result["sent_mib"] += 1 / 16
                s.sendall(b"\r\n\r\n")
            except OSError:
                pass
            s.settimeout(60)
            try:
                reply = s.recv(200)
            except OSError as exc:
                reply = repr(exc).encode()
            result["answer"] = reply.split(b"\r\n", 1)[0].decode("latin1")
            result["answered_after_s"] = round(time.monotonic() - t0, 3)

    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=120) as other:
        other.get("/healthz")
        thread = threading.Thread(target=attack)
        thread.start()
        while thread.is_alive() or len(latencies) < 10:
            start = time.monotonic()
            other.get("/healthz")
            latencies.append(time.monotonic() - start)
            time.sleep(0.02)
        thread.join()
    result["healthz_requests"] = len(latencies)
    result["healthz_max_ms"] = round(max(latencies) * 1000, 1)
    result["healthz_median_ms"] = round(statistics.median(latencies) * 1000, 1)
    return result


def architectures(size: int) -> list[tuple[str, str, bytes]]:
    """TorchScript's zip layout with one stored entry of `size` bytes (no worker runs here to
    find it holds no model)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for member in ("code/__torch__.py", "data.pkl", "constants.pkl", "version"):
            z.writestr(f"archive/{member}", "")
        z.writestr("archive/data/0", np.random.default_rng(1).bytes(size))
    return [("architecture", f"a{i}.pt", buf.getvalue()) for i in range(8)]


def many_entries(entries: int = 420_000) -> list[tuple[str, str, bytes]]:
    """The issue's hostile architecture: a zip of `entries` empty members (~45 MB: 500,000 pass
    NADS_MAX_ARCHITECTURE_BYTES here, the issue's had shorter names), whose
    central directory Python's zipfile would hold whole (nadcore.uploaded.strict_zip reads the count
    from the end records first)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(entries):
            z.writestr(f"archive/{i:07d}", b"")
    return [("architecture", f"h{i}.pt", buf.getvalue()) for i in range(8)]


def payloads(size: int) -> list[tuple[str, str, bytes]]:
    rng = np.random.default_rng(0)
    n = size // (32 * 32 * 3)
    buf = io.BytesIO()
    np.savez(buf, x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
             y=rng.integers(0, 10, n, dtype=np.int64))
    dataset = buf.getvalue()
    buf = io.BytesIO()
    np.save(buf, rng.standard_normal((size // 4096, 1024)).astype(np.float32))
    nads = buf.getvalue()
    return [("dataset", f"d{i}.npz", dataset) for i in range(4)] + \
        [("nads", f"n{i}.npy", nads) for i in range(4)]


def concurrent_uploads(url: str, key: str, pid: int,
                       files: list[tuple[str, str, bytes]]) -> dict:
    proc = psutil.Process(pid)
    before = proc.memory_info().rss
    peak, stop = before, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.monotonic()

    def upload(item: tuple[str, str, bytes]) -> int:
        kind, name, content = item
        route, data = ("/v1/architectures", {"name": name[:-3], "input_shape": "1,8,8"}) \
            if kind == "architecture" else ("/v1/uploads", {"kind": kind})
        return httpx.post(url + route, data=data, files={"file": (name, content)},
                          headers={"Authorization": f"Bearer {key}"}, timeout=600).status_code

    with ThreadPoolExecutor(len(files)) as pool:
        codes = list(pool.map(upload, files))
    took = time.monotonic() - t0
    stop.set()
    sampler.join()
    return {"uploads": len(files), "mb_each": round(len(files[0][2]) / 1e6, 1), "codes": codes,
            "seconds": round(took, 1), "rss_before_mib": round(before / 2**20),
            "rss_peak_mib": round(peak / 2**20),
            "rss_after_mib": round(proc.memory_info().rss / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=HERE)
    parser.add_argument("--http", default="api.serving:HeaderTimeoutProtocol")
    parser.add_argument("--upload-bytes", type=int, default=45_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, key = start_api(args.repo.resolve(), Path(tmp), args.http)
        try:
            report = {"repo": str(args.repo), "http": args.http,
                      "header_attack": header_attack(url),
                      "uploads": concurrent_uploads(url, key, proc.pid,
                                                    payloads(args.upload_bytes)),
                      "architectures": concurrent_uploads(url, key, proc.pid,
                                                          architectures(args.upload_bytes)),
                      "many_entries": concurrent_uploads(url, key, proc.pid, many_entries())}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
