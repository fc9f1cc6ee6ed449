#!/usr/bin/env bash
# The background catalog build (issue 29): vgg11, then resnet18, then densenet121, 2,000
# networks each by default, one process at a time at nice 19 on one torch thread
# (`nads catalog compute`, nads/catalog_background.py). Resumes from the partials under
# catalog_data/<arch>/partials/; an entry already finalized is skipped.
#
#   cd <repository> && setsid nohup scripts/catalog_build.sh > catalog-build.log 2>&1 &
#
# NETWORKS=10000 extends the same partials (network j is always the same network). Started
# twice (one per idle core), the two share each architecture's shards: each claims the next
# free one, the last to finish finalizes, and one that finds the rest claimed goes on to the
# next architecture.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
NETWORKS=${NETWORKS:-2000}
# the precision of each architecture is nads.catalog_background.CPU_PRECISION (measured:
# BENCHMARKS.md, Catalog on the CPU), read when its build starts
ARCHS=${ARCHS:-"vgg11 resnet18 densenet121"}
for arch in $ARCHS; do
  have=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["networks"])' \
    "catalog_data/$arch/provenance.json" 2>/dev/null || echo 0)
  if [ "$have" -ge "$NETWORKS" ] && [ ! -d "catalog_data/$arch/partials" ]; then
    echo "$(date -u +%FT%TZ) $arch: already built with $have networks"; continue
  fi
  echo "$(date -u +%FT%TZ) $arch: start ($NETWORKS networks)"
  nice -n 19 "$PY" -m nads.cli catalog compute --arch "$arch" --networks "$NETWORKS" \
    --threads 1 || { echo "$(date -u +%FT%TZ) $arch: failed"; exit 1; }
done
echo "$(date -u +%FT%TZ) done"
