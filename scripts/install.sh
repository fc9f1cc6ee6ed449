#!/usr/bin/env bash
# Creates .venv with Python 3.11, installs the project with its dev extras, and the system
# packages it needs when they are missing (bubblewrap for the sandbox, Chromium for the
# browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'

# System packages the project needs, from Debian's packages when missing (root or sudo); a
# failed install only warns: the tests that need the package say so.
. scripts/lib/apt.sh

# bubblewrap: the sandbox in which workers run users' uploaded models (worker/sandbox.py).
command -v bwrap >/dev/null || apt_install "uploaded models will not run" bubblewrap || true

# Headless Chromium for the web page's browser tests (tests/service/test_web.py, driven by
# Playwright with executable_path; `playwright install` is never needed).
[ -x /usr/bin/chromium ] || apt_install "the browser tests will fail" chromium chromium-driver || true
