"""Issue 14, section 3: the service's own jobs on a running `nads serve` (its worker on the GPU
when there is one), over HTTP: the catalog as built (read back), a LeNet Fourier probe grid with
the paper's recipe, a LeNet poison job on digits. Every job's wall time is recorded next to its
run time on the worker; benchmarks/gpu_run.sh puts the engine's own figures beside them.

    python benchmarks/gpu_service.py --url URL --key KEY --out DIR [--tiny]
Writes DIR/service.json and the jobs' arrays and figures under DIR/jobs/.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

from nads.client import Client


def probe_spec(tiny: bool) -> dict:
    """The paper's LeNet heatmap: sine directions on a 16 x 16 grid of 32 x 32 frequencies
    (stride 2), 10,000 / 10,000 samples, 20 epochs (tiny: stride 8, 256 samples, 1 epoch)."""
    spec = {"architecture": "lenet", "input_shape": [1, 32, 32],
            "directions": {"kind": "fourier", "grid_stride": 8 if tiny else 2, "phase": "sin"},
            "seed": 0, "shards": 1}
    if tiny:
        spec |= {"data": {"num_train": 256, "num_test": 256}, "training": {"epochs": 1}}
    return spec


def digits_upload(client: Client, path: Path) -> str:
    with open(path, "rb") as f:
        r = client._request("POST", "/v1/uploads", files={"file": (path.name, f)},
                            data={"kind": "dataset"})
    return r.json()["id"]


def poison_spec(tiny: bool, dataset: dict) -> dict:
    """LeNet on digits with the catalog's LeNet NADs, the paper's recipe, 8 epochs (as
    BENCHMARKS.md's CPU table); tiny: 2 indices, 1 epoch."""
    indices = [0, 30] if tiny else [0, 5, 10, 25, 50, 100, 250, 500, 1000]
    return {"architecture": "lenet", "dataset": dataset, "nads": {"catalog": "lenet"},
            "indices": indices, "eps": 2.0, "training": {"epochs": 1 if tiny else 8},
            "seed": 0, "shards": 1}


def run_job(client: Client, kind: str, spec: dict, out: Path, timeout: float) -> dict:
    t0 = time.monotonic()
    job = client.submit(kind, spec)
    job = client.wait(job.id, timeout=timeout, interval=0.5)
    wall = time.monotonic() - t0
    folder = out / "jobs" / f"{kind}-{job.id}"
    if job.status == "succeeded":
        client.download(job.id, folder)
    timings = job.raw.get("timings") or {}
    return {"kind": kind, "id": job.id, "status": job.status, "error": job.error,
            "wall_s": round(wall, 2), "timings": timings, "summary": job.summary,
            "artifacts": sorted(p.name for p in folder.glob("*")) if folder.is_dir() else []}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--digits-npz", type=Path, default=None,
                    help="upload this .npz when scikit-learn (digits) is missing here")
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    client = Client(args.url, args.key)
    report: dict = {"catalog": [e.raw for e in client.catalog_ls()]}
    report["probe"] = run_job(client, "probe", probe_spec(args.tiny), args.out, args.timeout)
    if report["probe"]["status"] == "succeeded":
        acc = np.load(next((args.out / "jobs").glob("probe-*/accuracies.npy")))
        report["probe"]["accuracy"] = {"mean": float(acc.mean()), "min": float(acc.min()),
                                       "max": float(acc.max()), "directions": int(acc.size)}
    if importlib.util.find_spec("sklearn") is not None or args.digits_npz is None:
        dataset = {"name": "digits"}
    else:
        dataset = {"upload": digits_upload(client, args.digits_npz)}
    report["poison"] = run_job(client, "poison", poison_spec(args.tiny, dataset), args.out,
                               args.timeout)
    print(json.dumps({k: v for k, v in report.items() if k != "catalog"}, indent=1))
    (args.out / "service.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
