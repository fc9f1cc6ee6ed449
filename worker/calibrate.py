"""How fast this worker computes: a short calibration at its start, then its finished shards.

`python -m worker.calibrate` (run by the worker in a child process, so that neither torch's
threads nor CUDA start in the prefork parent) times the finite-difference gradients of a few
LeNet networks (1x32x32, one process's threads, cuda:0 on a GPU worker) after two small ones
(1x16x16) to warm up,
and prints `{"device", "flops_per_s", "native_bf16"}`: the cost estimate's FLOPs
(nadcore.nads.cost) over the seconds, and whether the device computes bfloat16 in hardware
(nadcore.nads.precision.native_bf16: bf16 jobs are timed by it, jobs/fleet.py). Under a second
on this machine's CPU core (about 2.7 GFLOP per network).

Only a worker that runs shards calibrates (`calibrates`): the validation lane's rate would be
read by nothing, and measuring it cost every `nads serve` a core for seconds at its start.

Each finished shard then records what it measured for its job kind (its share of the job's
estimated FLOPs over its run seconds), so estimates follow the work actually run and the load
of the machine (jobs/fleet.py reads them). A bf16 job's shards are recorded apart
(`jobs.fleet.rate_key`): where bf16 is emulated they run 22-41x slower than fp32 ones.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from jobs.broker import CATALOG_QUEUE, CPU_QUEUE, GPU_QUEUE
from jobs.fleet import CALIBRATION
from store.db import session_scope
from store.models import Worker
from store.settings import Settings

log = logging.getLogger(__name__)

NETWORKS = 2  # timed, after one to warm up
SHAPE = (1, 32, 32)
WARM_UP = (1, 16, 16)  # the same code paths on a quarter of the inputs
MIN_SHARD_S = 1.0  # of compute at the calibrated rate: a smaller shard is not recorded
WEIGHT = 0.5  # of a new measurement against the recorded one (exponential average)


def measure(gpus: int) -> dict[str, Any]:
    import torch

    from nadcore import estimate_nads
    from nadcore.nads.cost import estimate_cost
    from nadcore.nads.engine import device_name
    from nadcore.nads.precision import native_bf16
    from nadcore.nads.spec import NADSpec

    device = torch.device("cuda:0" if gpus > 0 and torch.cuda.is_available() else "cpu")
    estimate_nads("lenet", WARM_UP, num_networks=2, seed=0, device=device)  # lazy set-ups
    t0 = time.perf_counter()
    estimate_nads("lenet", SHAPE, num_networks=NETWORKS, seed=1, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    flops = estimate_cost(NADSpec(architecture="lenet", input_shape=SHAPE,
                                  num_networks=NETWORKS)).flops
    return {"device": device_name(device), "flops_per_s": flops / seconds,
            "seconds": seconds, "native_bf16": native_bf16(device)}


def _run_child(timeout: float = 120) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "worker.calibrate"], capture_output=True,
                         text=True, timeout=timeout, env=os.environ.copy(), check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker.calibrate exited {out.returncode}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def record(settings: Settings, name: str, device: str | None, key: str,
           flops_per_s: float, native_bf16: bool | None = None) -> None:
    """Merges a measurement into the worker's throughput (`key`: a job's rate key,
    `jobs.fleet.rate_key`, averaged with the previous value, or `calibration`, which replaces
    it, and says whether the device has native bf16)."""
    with session_scope(settings.resolved_database_url) as session:
        worker = session.scalar(select(Worker).where(Worker.name == name))
        if worker is None:
            return
        throughput = dict(worker.throughput or {})
        old = throughput.get(key)
        throughput[key] = (flops_per_s if old is None or key == CALIBRATION
                           else WEIGHT * flops_per_s + (1 - WEIGHT) * float(old))
        worker.throughput = throughput
        if device:
            worker.device = device
        if key == CALIBRATION:
            worker.native_bf16 = native_bf16
        session.commit()


def record_shard(settings: Settings, name: str, key: str, flops: float,
                 seconds: float) -> None:
    """Records a finished shard's FLOP/s for its job's rate key (`jobs.fleet.rate_key`), when
    its work was large enough to say: at least MIN_SHARD_S of compute at the worker's
    calibrated rate (a tiny shard's seconds are its fixed costs, reading the job and storing
    the partial, and would say that the worker computes at a few MFLOP/s)."""
    with session_scope(settings.resolved_database_url) as session:
        worker = session.scalar(select(Worker).where(Worker.name == name))
        calibration = (worker.throughput or {}).get(CALIBRATION) if worker else None
    if calibration is None or seconds <= 0 or flops / float(calibration) < MIN_SHARD_S:
        return
    record(settings, name, None, key, flops / seconds)


SHARD_QUEUES = frozenset({GPU_QUEUE, CPU_QUEUE, CATALOG_QUEUE})


def calibrates(queues: Iterable[str]) -> bool:
    """Whether a worker consuming `queues` calibrates: only if it takes shards. The rates read
    are those of the processes taking users' shards (jobs/fleet.py) and, for a shard's budget
    and its recorded throughput, the rate of the worker running it; a validation lane's would
    never be read."""
    return not SHARD_QUEUES.isdisjoint(queues)


def start_calibration(settings: Settings, name: str) -> threading.Thread:
    """Calibrates in a child process, in the background; the result goes to the worker's row."""

    def run() -> None:
        try:
            result = _run_child()
            record(settings, name, result["device"], CALIBRATION, result["flops_per_s"],
                   result.get("native_bf16"))
            log.info("worker %s: %s, %.2f GFLOP/s per process (calibration, %.2f s; native "
                     "bf16: %s)", name, result["device"], result["flops_per_s"] / 1e9,
                     result["seconds"], result.get("native_bf16"))
        except Exception:  # noqa: BLE001 (no estimate is not a reason to stop a worker)
            log.warning("worker %s: calibration failed", name, exc_info=True)

    thread = threading.Thread(target=run, name=f"calibrate-{name}", daemon=True)
    thread.start()
    return thread


def shard_flops(estimate: dict[str, Any] | None, shard_items: int,
                job_items: int) -> float | None:
    """A shard's share of the job's estimated FLOPs (None when the cost is unknown)."""
    flops = (estimate or {}).get("flops")
    if flops is None or job_items <= 0:
        return None
    return float(flops) * shard_items / job_items


if __name__ == "__main__":
    print(json.dumps(measure(int(os.environ.get("NADS_WORKER_GPUS", "0") or 0))))
