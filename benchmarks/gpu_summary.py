"""The markdown summary of a benchmarks/gpu_run.sh run: precision table, catalog entries with
the service's wall time beside the engine's own rate for the same work, probe and poison jobs.

    python benchmarks/gpu_summary.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    out = Path(sys.argv[1])
    precision = json.loads((out / "precision.json").read_text()) \
        if (out / "precision.json").is_file() else []
    rates = {(r["arch"], row["resolved"]): row["networks_per_s"]
             for r in precision for row in r["precisions"].values()}
    print("## Precision (benchmarks/bench_precision.py)\n")
    print("| arch | N | precision | net/s | TFLOP/s | of dense peak | vs paper loop | "
          "grad rel err (worst net) | overlap k=1/4/16/64 | bf16 proposed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in precision:
        for p, row in r["precisions"].items():
            ov = row.get("overlap", {})
            print(f"| {r['arch']} | {r['networks']} | {p} ({row['resolved']}) | "
                  f"{row['networks_per_s']} | {row['tflops']} | {row['peak_fraction']} | "
                  f"{row.get('speedup_vs_baseline')}x | {row.get('gradient_rel_error', 0):.2e}"
                  f" ({row.get('gradient_rel_error_max_network', 0):.2e}) | "
                  f"{' / '.join(f'{v:.4f}' for v in ov.values()) or '-'} | "
                  f"{r.get('propose_bf16')} |")
    print("\n## Catalog built through the service, exported (catalog_data/)\n")
    print("| arch | networks | precision | device | service wall s | engine alone s "
          "(N / net/s of section 1) | stability k=64 |")
    print("|---|---|---|---|---|---|---|")
    for prov_path in sorted((out / "catalog_data").glob("*/provenance.json")):
        prov = json.loads(prov_path.read_text())
        rate = rates.get((prov["architecture"], prov["precision"]))
        engine = f"{prov['networks'] / rate:.1f}" if rate else "-"
        print(f"| {prov['architecture']} | {prov['networks']} | {prov['precision']} | "
              f"{prov['device_name']} | {prov['wall_seconds']} | {engine} | "
              f"{prov['stability'].get('64', '-')} |")
    service = out / "service.json"
    if service.is_file():
        report = json.loads(service.read_text())
        print("\n## Jobs over HTTP\n")
        print("| job | status | wall s (submit to succeeded) | run s on the worker | queued s | "
              "result |")
        print("|---|---|---|---|---|---|")
        for kind in ("probe", "poison"):
            job = report.get(kind)
            if not job:
                continue
            t = job.get("timings") or {}
            final = (job.get("summary") or {}).get("final") or []
            result = job.get("accuracy") or {  # poison: clean test accuracy per index
                f"index {row['index']}": row.get("test_accuracy") for row in final}
            print(f"| {kind} {job['id'][:8]} | {job['status']} | {job['wall_s']} | "
                  f"{t.get('run_s')} | {t.get('queued_s')} | {json.dumps(result)[:200]} |")
    for name in ("verify.txt", "timeline.txt"):
        if (out / name).is_file():
            print(f"\n## {name}\n\n```\n{(out / name).read_text().strip()}\n```")


if __name__ == "__main__":
    main()
