#!/usr/bin/env bash
# Prepares .whl/ (git-ignored; carried to the device machine, which has no network) for
# benchmarks/gpu_run.sh: wheels of the service's packages for the device's Python (3.12; torch,
# numpy and pillow come with its image), and digits32.npz (scikit-learn's digits as nadcore
# resizes them, 32 x 32, with nadcore's fixed train/test split) for the poison job when the
# device lacks scikit-learn and SciPy (too large to carry: ~50 MB).
#   bash benchmarks/gpu_wheels.sh          then: device run with carry [".whl"]
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download -q --dest .whl --only-binary=:all: --python-version "${PYVER:-3.12}" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  pydantic pydantic-settings fastapi uvicorn python-multipart celery sqlalchemy alembic \
  prometheus-client psutil matplotlib typer httpx pyyaml tqdm
rm -f .whl/numpy-*.whl .whl/pillow-*.whl   # in the device image (torch, torchvision)
"$PY" - <<'PY'
import numpy as np
from nadcore.poison.datasets import load_digits
d = load_digits()
np.savez_compressed(".whl/digits32.npz", x=d.x_train.numpy(), y=d.y_train.numpy(),
                    x_test=d.x_test.numpy(), y_test=d.y_test.numpy())
PY
du -sh .whl && ls .whl | wc -l
