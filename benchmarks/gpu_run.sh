#!/usr/bin/env bash
# The GPU session's one script (device tool): correctness on the GPU, speed against the
# baseline, and wall time of the paper's 10,000-network ResNet-18 estimate.
# Carries .whl (pydantic and its needs for the device's Python 3.12). Writes to $OUT.
#   device run: bash benchmarks/gpu_run.sh   (carry: .whl)
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 120 python3 benchmarks/gpu_check.py 2>&1 | tee "$OUT/check.txt"
timeout 150 python3 benchmarks/bench_nads.py --device cuda --gpu --repeats 2 --only "${CASES:-0,5}" \
  2>&1 | tee "$OUT/bench_gpu.txt"
timeout 420 python3 benchmarks/wall_time.py --arch resnet18 --networks "${WALL_N:-10000}" \
  --device cuda 2>&1 | tee "$OUT/resnet_wall.txt"
