#!/usr/bin/env bash
# The GPU session's one script (device tool): correctness, speed, early stopping, wall time.
# Carries .whl (pydantic and its needs for the device's Python). Writes to $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 120 python3 benchmarks/gpu_check.py 2>&1 | tee "$OUT/check.txt"
timeout 200 python3 benchmarks/bench_nads.py --device cuda --gpu --repeats 2 2>&1 \
  | tee "$OUT/bench_gpu.txt"
best=$(python3 - "$OUT/bench_gpu.txt" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{"arch": "resnet18"')]
fd = [r for r in rows if r["method"] == "finite_difference"]
print(max(fd, key=lambda r: r["ours_net_per_s"])["plan"]["strategy"] if fd else "vmap")
PY
)
timeout 150 python3 benchmarks/wall_time.py --arch resnet18 --networks 2000 --device cuda \
  --strategy "$best" 2>&1 | tee "$OUT/resnet_wall.txt"
timeout 120 python3 benchmarks/early_stopping.py --device cuda --max 40000 2>&1 \
  | tee "$OUT/early_gpu.txt"
