"""A catalog entry computed in the background on this machine, shard by shard, resumable.

`nads catalog compute --arch vgg11 --networks 2000 --precision bf16` computes networks [0, N)
of the catalog's spec (finite differences, scale 100, 1x32x32, seed 0) in shards of a few
minutes each, at the lowest CPU priority (nice 19) on one torch thread, and writes every
finished shard as a partial (`PartialNADs.save`: the shard's float32 gradients, 4 KiB per
network, and its provenance) to `catalog_data/<arch>/partials/<start>-<stop>.npz` (written to a
temporary name, then renamed: a stop loses at most the shard under way). Started again, it
computes only the networks that no partial covers. Network j is drawn from (seed 0, j) whatever
N, so the partials of a 2,000-network build are the first 2,000 networks of a 10,000-network
one: more CPU time, or a GPU given the partials, extends the build instead of redoing it.

When partials cover [0, N), it finalizes: the entry is written in the shipped format
(nads/catalog_export.py, with the shards' provenance) and the partials are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from jobs.shipped import PARTIALS, PROVENANCE, partial_files
from nadcore.nads.engine import ShardRunner, merge_key
from nadcore.nads.partial import PartialNADs, merge_partials
from nads.catalog_export import CHECK_NETWORKS_BY_ARCH, catalog_spec, export_partial

AUTOGROUP = Path("/proc/self/autogroup")
RECENT_SHARDS = 8  # the time left is estimated from the pace of this build's last 8 shards
# networks per shard: a few minutes of one loaded CPU thread each (BENCHMARKS.md, Catalog on
# the CPU), so that a stop loses little
SHARD_NETWORKS = {"logreg": 500, "lenet": 100, "vgg11": 20, "resnet18": 8, "densenet121": 2}
# the precision of a CPU build, where the command is not told: bf16 only where it passed the
# bar of benchmarks/catalog_precision.py (BENCHMARKS.md, Catalog on the CPU) and was faster:
# VGG-11, built on CPUs with native bf16 (2x faster there). ResNet-18 passed the bar too, but
# a build moves between machines, the partials of a build must share one precision, and on a
# CPU without native bf16 (AVX2 only: `native_bf16`) bf16 is 41x slower than fp32
# (benchmarks/cpu_bf16.py): fp32 runs well everywhere. Read by every new build process, so a
# change here reaches the next architecture of a running scripts/catalog_build.sh
CPU_PRECISION = {"logreg": "fp32", "lenet": "fp32", "vgg11": "bf16", "resnet18": "fp32",
                 "densenet121": "fp32"}


class BuildError(ValueError):
    """The partials present cannot be extended by this build (another spec, overlaps), or
    this machine cannot compute it sensibly (emulated bf16)."""


def check_precision(precision: str, native: bool | None) -> None:
    """BuildError for a bf16 build where the device has no native bf16 (`native` False, from
    `native_bf16`): emulated, it is tens of times slower than fp32, for days."""
    if precision == "bf16" and native is False:
        raise BuildError("precision: bf16 is emulated on this CPU (no AVX512-BF16 or AMX): "
                         "tens of times slower than fp32 here (41x for ResNet-18). Use "
                         "--precision fp32 (partials of another precision must then move "
                         "away), or build on a CPU with native bf16")


@dataclass(frozen=True)
class PartialFile:
    path: Path
    start: int
    stop: int


def partials_dir(data: Path, arch: str) -> Path:
    return data / arch / PARTIALS


def partial_path(folder: Path, start: int, stop: int) -> Path:
    return folder / f"{start:05d}-{stop:05d}.npz"


def present(folder: Path) -> list[PartialFile]:
    """The finished partials in `folder`, by start; overlapping ranges are refused."""
    found = [PartialFile(*f) for f in partial_files(folder)]
    for a, b in zip(found, found[1:], strict=False):
        if b.start < a.stop:
            raise BuildError(f"partials: {a.path.name} and {b.path.name} overlap")
    return found


def missing_shards(done: list[PartialFile], networks: int, shard: int) -> list[tuple[int, int]]:
    """The ranges of [0, networks) that no partial covers, cut at multiples of `shard` (the
    same cuts whatever was done before, so that shards of different runs line up)."""
    todo, lo = [], 0
    for a, b in [(p.start, p.stop) for p in done] + [(networks, networks)]:
        start = lo
        while start < min(a, networks):
            stop = min(a, networks, (start // shard + 1) * shard)
            todo.append((start, stop))
            start = stop
        lo = max(lo, b)
    return todo


def _save_atomic(part: PartialNADs, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            part.save(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _locked(data: Path, arch: str) -> Iterator[None]:
    """The build's lock, held for the short steps that read or change which shards are done
    or claimed (choosing a shard, saving one, finalizing), never while computing. It lies
    beside the entry (catalog_data/.<arch>.build.lock), not in the partials' folder, which
    finalizing removes while a waiting build holds the lock file open."""
    data.mkdir(parents=True, exist_ok=True)
    with open(data / f".{arch}.build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def claim_path(folder: Path, start: int, stop: int) -> Path:
    return folder / f".{start:05d}-{stop:05d}.claim"


def _try_claim(folder: Path, start: int, stop: int) -> IO[str] | None:
    """The claim of shard [start, stop), open and locked, or None where another process
    holds it. Called under the folder's lock. The lock is the kernel's (flock), so the claim
    of a process that died is free again at once: its shard is computed by the next build."""
    folder.mkdir(parents=True, exist_ok=True)
    f = open(claim_path(folder, start, stop), "a")  # noqa: SIM115 (held until released)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def _release(folder: Path, claim: IO[str]) -> None:
    """Called under the folder's lock, after the shard's partial is saved (or abandoned)."""
    Path(claim.name).unlink(missing_ok=True)
    claim.close()


def builds_computing(folder: Path) -> int:
    """How many builds hold a claim in `folder` now (this one's included): the shards being
    computed at once, which the time left divides by. Called under the folder's lock; a claim
    file whose build died is free, taken and let go at once."""
    held = 0
    for path in folder.glob(".*.claim"):
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held += 1
    return held


def time_left(seconds_per_network: list[float], networks_left: int, builds: int) -> float:
    """Seconds until `networks_left` are computed by `builds` builds at once, each at the median
    rate of this build's last `RECENT_SHARDS` shards: one slow shard (the first, which compiles;
    one beside a test run) moves it little, a lasting change of pace within a few shards."""
    recent = seconds_per_network[-RECENT_SHARDS:]
    return statistics.median(recent) * networks_left / max(1, builds)


def _next_shard(folder: Path, todo: list[tuple[int, int]]
                ) -> tuple[tuple[int, int], IO[str]] | None:
    for start, stop in todo:
        claim = _try_claim(folder, start, stop)
        if claim is not None:
            return (start, stop), claim
    return None


def lowest_priority(threads: int = 1) -> dict[str, int | None]:
    """nice 19 and `threads` torch threads for this process; returns what was set.

    Where the kernel groups processes by session (CONFIG_SCHED_AUTOGROUP, on by default in
    most distributions), a nice value only ranks a process within its own session's group,
    and the group competes with every other session as an equal: measured here, the nice-19
    build got the same CPU share as the nice-0 processes of other sessions. So the process
    starts a session of its own (possible unless it leads a process group, as a job of an
    interactive shell does) and sets that session group's nice to 19 as well; nothing else is
    in that group. Where either step is refused, nice alone does what it can."""
    import torch

    niceness = os.nice(19 - os.nice(0))
    with contextlib.suppress(OSError):  # EPERM when it leads a process group already
        os.setsid()
    if os.getsid(0) == os.getpid():  # its session's group is its own (started by `setsid`
        with contextlib.suppress(OSError):  # too, where setsid above is refused)
            AUTOGROUP.write_text("19")
    torch.set_num_threads(threads)
    return {"nice": niceness, "autogroup_nice": group_nice(),
            "threads": torch.get_num_threads()}


def group_nice() -> int | None:
    """The nice of this process's session group (None where the kernel has none)."""
    try:
        return int(AUTOGROUP.read_text().split("nice")[-1])
    except (OSError, ValueError):
        return None


def _load_part(path: Path, key: str) -> PartialNADs:
    part = PartialNADs.load(path)
    if part.key != key or part.gradients is None:
        raise BuildError(f"partials: {path.name} was computed for another spec or precision "
                         "(its key differs); use that precision or move it away")
    return part


def _slice(part: PartialNADs, stop: int) -> PartialNADs:
    if part.stop <= stop:
        return part
    return PartialNADs(part.key, part.start, stop, part.eval_point,
                       gradients=part.gradients[:stop - part.start], meta=part.meta)


def _shard_record(part: PartialNADs) -> dict[str, Any]:
    meta = part.meta
    return {"networks": [part.start, part.stop], "seconds": round(meta.get("seconds", 0.0), 2),
            "precision": meta.get("precision"), "device": meta.get("plan", {}).get("device"),
            "device_name": meta.get("device_name"), "torch": meta.get("torch"),
            "threads": meta.get("plan", {}).get("threads"),
            "compiled": meta.get("plan", {}).get("compiled", False),
            "first_block_local": meta.get("plan", {}).get("first_block_local", False),
            "nice": meta.get("nice"),
            "autogroup_nice": meta.get("autogroup_nice"),
            "load_average": meta.get("load_average"), "finished_at": meta.get("finished_at")}


def build_record(parts: list[PartialNADs]) -> dict[str, Any]:
    """What the finalized entry records of the shards it was made of."""
    shards = [_shard_record(p) for p in parts]
    seconds = [s["seconds"] for s in shards]
    loads = [s["load_average"] for s in shards if s["load_average"] is not None]
    return {
        "how": "nads catalog compute: each shard computed by one process, one or more "
               "builds at a time (its nice, threads and the load average while it ran: "
               "shard_list)",
        "shards": len(shards),
        "shard_seconds_total": round(sum(seconds), 1),
        "seconds_per_network": float(f"{sum(seconds) / max(parts[-1].stop, 1):.3g}"),
        "load_average_mean": round(float(np.mean(loads)), 2) if loads else None,
        "devices": sorted({str(s["device_name"]) for s in shards}),
        "torch": sorted({str(s["torch"]) for s in shards}),
        "precisions": sorted({str(s["precision"]) for s in shards}),
        "compiled_networks": sum(s["networks"][1] - s["networks"][0] for s in shards
                                 if s["compiled"]),
        "first_block_local_networks": sum(s["networks"][1] - s["networks"][0] for s in shards
                                          if s["first_block_local"]),
        "first_finished_at": min((s["finished_at"] or "") for s in shards),
        "last_finished_at": max((s["finished_at"] or "") for s in shards),
        "shard_list": shards,
    }


def built(data: Path, arch: str, networks: int, precision: str) -> bool:
    """Whether data/arch holds a finished entry of at least `networks` in `precision`."""
    try:
        prov = json.loads((data / arch / PROVENANCE).read_text())
    except (OSError, ValueError):
        return False
    return prov.get("networks", 0) >= networks and prov.get("precision") == precision


def finalize_build(data: Path, arch: str, networks: int, precision: str,
                   check_networks: int | None = None, remove: bool = True) -> Path:
    """The entry of partials covering [0, networks), written to data/arch; partials removed."""
    folder = partials_dir(data, arch)
    existing = data / arch / PROVENANCE
    if existing.is_file() and json.loads(existing.read_text()).get("networks", 0) > networks:
        raise BuildError(f"networks: {data / arch} already holds an entry of more than "
                         f"{networks} networks; it is not replaced by a smaller one")
    spec = catalog_spec(arch, networks, precision)
    key = merge_key(spec)
    files = [p for p in present(folder) if p.start < networks]
    if missing_shards(files, networks, networks):
        raise BuildError(f"networks: the partials in {folder} do not cover [0, {networks})")
    parts = [_slice(_load_part(p.path, key), networks) for p in files]
    merged = merge_partials(parts)
    record = build_record(parts)
    check = check_networks or CHECK_NETWORKS_BY_ARCH.get(arch, 4)
    entry = export_partial(
        data, arch, spec, merged, check, wall_seconds=record["shard_seconds_total"],
        source=f"background CPU build (nads catalog compute): {len(parts)} shards of partials "
               f"{files[0].path.name} .. {files[-1].path.name}", build=record)
    if remove:  # those within the entry; any reaching beyond it (a longer build's) stay
        for p in files:
            if p.stop <= networks:
                p.path.unlink()
        if not present(folder):
            for leftover in folder.glob(".*"):
                leftover.unlink()
            folder.rmdir()
    return entry


def compute(data: Path, arch: str, networks: int, precision: str, *,
            shard_networks: int | None = None, device: str = "cpu", finalize: bool = True,
            max_shards: int | None = None, compiled: bool = False,
            report: Callable[[str], None] = print) -> Path | None:
    """Computes the shards of [0, networks) that are missing, then finalizes (unless told not
    to). Returns the entry's folder when finalized. `max_shards` stops after that many.

    Several builds of one architecture (processes, on one machine or sharing the folder)
    cooperate: each claims the next free shard (`claim_path`, a kernel lock held while it
    computes), so no shard is computed twice, and the build that saves the last finalizes.
    A build that finds every shard left claimed returns None.

    `compiled`: torch.compile'd forward passes (`nadcore.nads.gradients.compiled_forward`:
    1.3-1.5x faster on a CPU, equal to float32 rounding); where compiling fails (no C++
    compiler), the build says so and goes on in eager mode."""
    import torch

    from nadcore.nads.precision import native_bf16

    check_precision(precision, native_bf16(torch.device(device)))
    shard = shard_networks or SHARD_NETWORKS.get(arch, 10)
    folder = partials_dir(data, arch)
    spec = catalog_spec(arch, networks, precision)
    runner, rates = None, []  # seconds per network of each shard this build computed
    while True:
        with _locked(data, arch):
            done = present(folder)
            if done:  # the key of what is there must be this build's
                _load_part(done[0].path, merge_key(spec))
            elif built(data, arch, networks, precision):  # by this build, or another one
                report(f"{arch}: {data / arch} already holds an entry of {networks} or more "
                       f"networks in {precision}; nothing to compute")
                return None
            todo = missing_shards(done, networks, shard)
            covered = networks - sum(b - a for a, b in todo)
            if not rates:
                report(f"{arch}: {covered} of {networks} networks present in {len(done)} "
                       f"partials; {len(todo)} shards of up to {shard} networks to compute "
                       f"({precision}, {device}, {torch.get_num_threads()} thread(s), "
                       f"nice {os.nice(0)})")
            if not todo:
                if not finalize:
                    return None
                t0 = time.perf_counter()
                entry = finalize_build(data, arch, networks, precision)
                break
            if max_shards is not None and len(rates) >= max_shards:
                return None
            chosen = _next_shard(folder, todo)
            if chosen is None:  # the rest is claimed: its last builder finalizes
                report(f"{arch}: the {len(todo)} shard(s) left are being computed by other "
                       "builds; the last of them finalizes")
                return None
        (start, stop), claim = chosen
        try:
            runner = runner or ShardRunner(spec, device, compiled=compiled)
            load_before = os.getloadavg()[0]
            try:
                part = runner.partial(start, stop)
            except Exception as exc:  # Inductor's compile: a missing or failing C++ compiler
                if not runner.compiled:
                    raise
                report(f"{arch}: compiling the forward passes failed ({type(exc).__name__}: "
                       f"{str(exc)[:300]}); eager mode from here")
                runner = ShardRunner(spec, device)
                part = runner.partial(start, stop)
            part.meta |= {"nice": os.nice(0), "autogroup_nice": group_nice(),
                          "seed_range": [start, stop],
                          "load_average": round((load_before + os.getloadavg()[0]) / 2, 2),
                          "finished_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
            with _locked(data, arch):
                _save_atomic(part, partial_path(folder, start, stop))
                builds = max(1, builds_computing(folder))  # before this one lets go
                _release(folder, claim)
                covered = networks - sum(b - a for a, b in missing_shards(
                    present(folder), networks, shard))
        except BaseException:
            with _locked(data, arch):
                _release(folder, claim)
            raise
        rates.append(part.meta["seconds"] / (stop - start))
        left = time_left(rates, networks - covered, builds)
        report(f"{arch}: networks [{start}, {stop}) in {part.meta['seconds']:.0f} s "
               f"({rates[-1]:.1f} s per network, load {part.meta['load_average']}); "
               f"{covered} of {networks} done, about {left / 3600:.1f} h left at the median "
               f"pace of this build's last {min(len(rates), RECENT_SHARDS)} shard(s) "
               f"with {builds} build(s) computing")
    report(f"{arch}: finalized {entry} in {time.perf_counter() - t0:.0f} s; partials removed")
    return entry
