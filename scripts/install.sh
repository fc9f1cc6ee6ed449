#!/usr/bin/env bash
# Creates .venv with Python 3.11, installs the project with its dev extras, and Chromium
# for the browser tests when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'

# Headless Chromium (Debian's package) for the web page's browser tests (tests/service/test_web.py,
# driven by Playwright with executable_path; `playwright install` is never needed).
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if command -v apt-get >/dev/null && { [ -z "$SUDO" ] || command -v sudo >/dev/null; }; then
    { $SUDO apt-get update -q >/dev/null &&
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium chromium-driver \
        >/dev/null; } ||
      echo "install.sh: could not install chromium; the browser tests will fail" >&2
  else
    echo "install.sh: /usr/bin/chromium is missing and apt-get is not available;" \
         "install chromium for the browser tests" >&2
  fi
fi
