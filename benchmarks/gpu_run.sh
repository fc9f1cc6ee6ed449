#!/usr/bin/env bash
# Issue 14 in one prepared run on one GPU (budget: 9 minutes on an H200, start excluded):
#  1. precision: fidelity (gradient error, NAD overlap at k = 1, 4, 16, 64 against fp32) and
#     speed (net/s, TFLOP/s, fraction of peak, against the paper's loop) of fp32 / tf32 / bf16
#     for the five paper architectures (benchmarks/bench_precision.py); proposes NADS_AUTO_BF16;
#  2. the catalog through the service: `nads serve` (worker on the GPU), `nads catalog build
#     --replace` of the five architectures (10,000 networks, finite differences, scale 100,
#     1x32x32, seed 0), exported to the shipped format under $OUT/catalog_data, then verified
#     on the CPU (`nads catalog verify`);
#  3. over HTTP, on the same service: a LeNet 16x16 Fourier probe grid with the paper's recipe
#     and a LeNet poison job on digits (benchmarks/gpu_service.py).
# Everything lands under $OUT: timeline.txt (seconds since start of every step), precision.json,
# catalog_data/, verify.txt, service.json, jobs/, serve.log, worker.log, summary.md.
#
#   device run:     bash benchmarks/gpu_run.sh        (carry: .whl, made by benchmarks/gpu_wheels.sh)
#   CPU rehearsal:  NADS_GPU_RUN_TINY=1 OUT=/tmp/gpu-rehearsal bash benchmarks/gpu_run.sh
# Tiny mode: CPU, logreg and lenet only, a few networks, a 1-epoch probe and poison; it runs
# every step of the real run through the same code.
set -uo pipefail
START=$(date +%s)
TINY=${NADS_GPU_RUN_TINY:-0}
OUT=${OUT:-/tmp/gpu-run-out}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/nads-gpu-run.XXXXXX)
PY=${PYTHON:-python3}
DEADLINE_S=${DEADLINE_S:-540}

if [ "$TINY" = 1 ]; then
  PY=${PYTHON:-.venv/bin/python}
  DEV=cpu; ARCHS=${ARCHS:-logreg,lenet}; FID_N=6; FID_BUDGET=5; FID_CHUNK=3; BASE_N=1
  CAT_N=40; CAT_ROUND=20; CAT_SHARD=10; SERVICE_FLAGS=--tiny
else
  # the device's Python lacks the service's packages: install the carried wheels
  if ! "$PY" -c 'import fastapi, celery, sqlalchemy, alembic, typer, matplotlib' 2>/dev/null \
      && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
  fi
  DEV=${DEV:-cuda}; ARCHS=${ARCHS:-logreg,lenet,vgg11,resnet18,densenet121}
  FID_N=${FID_N:-2000}; FID_BUDGET=${FID_BUDGET:-15}; FID_CHUNK=${FID_CHUNK:-100}
  BASE_N=${BASE_N:-4}
  CAT_N=${CAT_N:-10000}; CAT_ROUND=${CAT_ROUND:-10000}; CAT_SHARD=${CAT_SHARD:-2500}
  SERVICE_FLAGS=""
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1

nads() { "$PY" -c 'import sys; sys.argv[0] = "nads"; from nads.cli import main; main()' "$@"; }
mark() { echo "$(( $(date +%s) - START )) s: $*" | tee -a "$OUT/timeline.txt"; }
left() { local l=$(( DEADLINE_S - ($(date +%s) - START) )); [ "$l" -gt "$1" ] && echo "$1" || echo $(( l > 5 ? l : 5 )); }

mark "start (tiny=$TINY, device=$DEV, archs=$ARCHS)"
{ command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv; "$PY" -c 'import torch; print("torch", torch.__version__, "cuda",
torch.cuda.is_available())'; } 2>&1 | tee "$OUT/device.txt"

# --- 1. precision: fidelity and speed -------------------------------------------------------
mark "precision benchmark"
timeout "$(left 240)" "$PY" benchmarks/bench_precision.py --device "$DEV" --archs "$ARCHS" \
  --networks "$FID_N" --budget-s "$FID_BUDGET" --chunk "$FID_CHUNK" \
  --baseline-networks "$BASE_N" --out "$OUT/precision.json" --auto-out "$OUT/auto_bf16.txt" \
  2>&1 | tee "$OUT/precision.txt"
export NADS_AUTO_BF16=$(cat "$OUT/auto_bf16.txt" 2>/dev/null || true)
mark "precision done; auto uses bf16 for: ${NADS_AUTO_BF16:-none}"

# --- 2. the catalog through the service ------------------------------------------------------
export NADS_DATA_DIR=$WORK/var NADS_CATALOG_SHIPPED_DIR= NADS_CATALOG_AUTOBUILD= \
  NADS_CATALOG_NETWORKS=$CAT_N NADS_CATALOG_ROUND_NETWORKS=$CAT_ROUND \
  NADS_CATALOG_SHARD_NETWORKS=$CAT_SHARD NADS_PROGRESS_INTERVAL_S=2
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
nads serve --port "$PORT" > "$OUT/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 180); do grep -q "local API key:" "$OUT/serve.log" && break; sleep 0.5; done
KEY=$(grep "local API key:" "$OUT/serve.log" | awk '{print $NF}')
[ -n "$KEY" ] || { mark "nads serve did not start"; cat "$OUT/serve.log"; kill "$SERVE_PID"; exit 1; }
mark "nads serve up on port $PORT"
BUILD_ARGS=()
for a in ${ARCHS//,/ }; do BUILD_ARGS+=(--arch "$a"); done
timeout "$(left 330)" "$PY" -c 'import sys; sys.argv[0] = "nads"; from nads.cli import main; main()' \
  catalog build "${BUILD_ARGS[@]}" --replace --wait --interval 5 2>&1 | tee "$OUT/catalog_build.txt"
mark "catalog build done"
for a in ${ARCHS//,/ }; do
  # check gradients: the architecture's default (nads/catalog_export.py CHECK_NETWORKS_BY_ARCH)
  nads catalog export "$a" --out "$OUT/catalog_data" \
    > "$OUT/export-$a.txt" 2>&1 && mark "exported $a" || mark "export of $a failed: $(tail -n1 "$OUT/export-$a.txt")"
done

# --- 3. probe and poison jobs over HTTP ------------------------------------------------------
DIGITS=()
[ -f .whl/digits32.npz ] && DIGITS=(--digits-npz .whl/digits32.npz)
timeout "$(left 200)" "$PY" benchmarks/gpu_service.py --url "http://127.0.0.1:$PORT" \
  --key "$KEY" --out "$OUT" $SERVICE_FLAGS "${DIGITS[@]}" 2>&1 | tee "$OUT/service.txt"
mark "probe and poison done"
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null
cp "$NADS_DATA_DIR/worker.log" "$OUT/worker.log" 2>/dev/null

# --- verification on the CPU, summary ---------------------------------------------------------
timeout "$(left 90)" "$PY" -c 'import sys; sys.argv[0] = "nads"; from nads.cli import main; main()' \
  catalog verify --data "$OUT/catalog_data" --device cpu 2>&1 | tee "$OUT/verify.txt"
mark "verify done"
"$PY" benchmarks/gpu_summary.py "$OUT" > "$OUT/summary.md" 2>&1
cat "$OUT/summary.md"
mark "end"
rm -rf "$WORK"
