"""Layer one's cost (issue 25): the strict parse, the member checks and the canonical rewrite of
the five built-ins' archives in both formats, against torch loading the same archive with no
check at all; and the API's refusal of a 45 MB zip of 500,000 entries.

    python benchmarks/bench_archive_checks.py [--repeats 3]

Per archive, best of `--repeats` (interleaved): `parse` (nadcore.uploaded.untrusted.read_archive:
end records, directory, local headers, every member inflated and CRC-checked, the layout), `check`
(tokens, pickle opcodes, JSON), `rewrite` (the canonical archive written), then the whole
`load_untrusted` (with torch's load and the graph walk) against `torch.jit.load` /
`torch.export.load` of the uploaded bytes alone. Peak memory is what tracemalloc counts of
Python allocations during parse + check + rewrite (the archive's bytes themselves excluded).
Prints one JSON line per archive and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

from nadcore.uploaded.archive_format import read_layout
from nadcore.uploaded.untrusted import (
    canonical_archive,
    check_export_members,
    check_torchscript_members,
    load_untrusted,
    read_archive,
)
from nads.export_command import export_architecture
from tests.hostile_zips import many_entries_zip

BUILTINS = ["logreg", "lenet", "vgg11", "resnet18", "densenet121"]


def _layer_one(data: bytes, fmt: str) -> dict[str, float]:
    times = {}
    t0 = time.perf_counter()
    members = read_archive(data, fmt)
    times["parse"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if fmt == "torchscript":
        check_torchscript_members(members)
        kept = members
    else:
        kept = check_export_members(members)
    times["check"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    canonical_archive(kept)
    times["rewrite"] = time.perf_counter() - t0
    return times


def _peak(data: bytes, fmt: str) -> int:
    tracemalloc.start()
    _layer_one(data, fmt)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def _timed(fn) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_archive(path: Path, fmt: str, repeats: int) -> dict:
    data = path.read_bytes()
    best: dict[str, float] = {}
    for _ in range(repeats):
        for key, value in _layer_one(data, fmt).items():
            best[key] = min(best.get(key, float("inf")), value)
        best["checked_load"] = min(best.get("checked_load", float("inf")),
                                   _timed(lambda: load_untrusted(data, fmt)))
        best["torch_load"] = min(best.get("torch_load", float("inf")),
                                 _timed(lambda: load_untrusted(data, fmt, checks=False)))
    return {"archive": path.name, "bytes": len(data), **best, "peak_bytes": _peak(data, fmt)}


def bench_many_entries(folder: Path, count: int) -> dict:
    path = folder / "many.pt"
    path.write_bytes(many_entries_zip(count))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        read_layout(path)
        refused = ""
    except Exception as exc:  # noqa: BLE001
        refused = str(exc)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"archive": f"{count:,} entries", "bytes": path.stat().st_size,
            "refused_in": elapsed, "peak_bytes": peak, "reason": refused}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for arch in BUILTINS:
            for suffix, fmt in (("pt", "torchscript"), ("pt2", "export")):
                path = export_architecture(arch, (1, 32, 32), folder / f"{arch}.{suffix}")
                row = bench_archive(path, fmt, args.repeats)
                print(json.dumps(row), flush=True)
                rows.append(row)
        many = bench_many_entries(folder, 500_000)
        print(json.dumps(many), flush=True)
    print("\n| archive | MB | parse ms | check ms | rewrite ms | layer one peak MB | "
          "checked load s | torch's load s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['archive']} | {r['bytes'] / 1e6:.2f} | {r['parse'] * 1e3:.1f} | "
              f"{r['check'] * 1e3:.1f} | {r['rewrite'] * 1e3:.1f} | "
              f"{r['peak_bytes'] / 1e6:.1f} | {r['checked_load']:.2f} | "
              f"{r['torch_load']:.2f} | {r['checked_load'] / r['torch_load']:.2f}x |")
    print(f"\n500,000 entries ({many['bytes'] / 1e6:.1f} MB): refused in "
          f"{many['refused_in'] * 1e3:.2f} ms, peak {many['peak_bytes'] / 1e3:.1f} kB: "
          f"{many['reason']}")


if __name__ == "__main__":
    main()
