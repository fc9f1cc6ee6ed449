"""Throughput of the two blob stores on one machine: the directory (store/blobs.py) and the S3
store (store/blobs_s3.py) against moto's S3 server on 127.0.0.1 (what the tests use; a real
MinIO or S3 has other figures: this measures our code path and boto3 over loopback HTTP).

    python benchmarks/bench_blobs_s3.py --mb 64 --rounds 3

For each store, per round: `put_file` of a fresh random file (stage: hash + copy; then the
upload or rename), `path` with a cold cache (the S3 store downloads, hashes and renames; the
directory has nothing to do), and `read_range` of the whole blob (how the API streams a
download). Best round kept (the machine is shared). Prints JSON, MB/s.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from store.blobs import BlobStore


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(store, tmp: Path, size: int, rounds: int) -> dict[str, float]:
    best: dict[str, float] = {}
    for _ in range(rounds):
        source = tmp / "source"
        source.write_bytes(os.urandom(size))
        t = time.perf_counter()
        sha, _ = store.put_file(source)
        times = {"put_file": time.perf_counter() - t}
        if store.remote:
            store.cache_path(sha).unlink()  # another node: a cold cache
        t = time.perf_counter()
        store.path(sha).stat()
        times["path_cold"] = time.perf_counter() - t
        t = time.perf_counter()
        got = sum(len(c) for c in store.read_range(sha, 0, size))
        times["read_range"] = time.perf_counter() - t
        assert got == size
        for name, seconds in times.items():
            best[name] = max(best.get(name, 0.0), size / 1e6 / max(seconds, 1e-9))
    return {k: round(v, 1) for k, v in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.mb * 2**20
    port = _port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(os.environ["AWS_ENDPOINT_URL"], timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        from store.blobs_s3 import S3BlobStore

        with tempfile.TemporaryDirectory() as tmp:
            s3 = S3BlobStore("bench", "blobs", Path(tmp) / "s3-local")
            s3.client.create_bucket(Bucket="bench")
            report = {
                "mb": args.mb, "rounds": args.rounds,
                "directory_MBps": measure(BlobStore(Path(tmp) / "dir"), Path(tmp), size,
                                          args.rounds),
                "s3_moto_MBps": measure(s3, Path(tmp), size, args.rounds),
            }
    finally:
        proc.terminate()
        proc.wait()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
