#!/usr/bin/env bash
# Second GPU script: aligned vmap groups (bitwise shards) and channels_last for ResNet-18.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
timeout 120 python3 benchmarks/gpu_check.py 2>&1 | tee "$OUT/check2.txt"
timeout 200 python3 benchmarks/bench_nads.py --device cuda --gpu --repeats 2 --only 0,4,5 2>&1 \
  | tee "$OUT/bench_gpu2.txt"
