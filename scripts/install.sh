#!/usr/bin/env bash
# Creates .venv with Python 3.11 (else 3.12 or 3.13: scripts/lib/python.sh), installs the
# project with its dev extras (everything: client, engine, service and the tools), and the
# system packages it needs when they are missing (bubblewrap for the sandbox, Chromium for the
# browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/python.sh
PY=$(pick_python)
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

# A worker running as root runs the sandbox as this unprivileged user (NADS_SANDBOX_USER), never
# as host root, and refuses to start without it. The user must be able to read the Python
# installation, the virtual environment and nadcore (read-only mounts in the sandbox): each
# folder on the way to them gets the search bit for others (o+x: entering, not listing).
if [ "$(id -u)" -eq 0 ]; then
  SANDBOX_USER=${NADS_SANDBOX_USER:-nads-sandbox}
  if ! id -u "$SANDBOX_USER" >/dev/null 2>&1; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$SANDBOX_USER"
    echo "install.sh: created the sandbox user $SANDBOX_USER" >&2
  fi
  for path in "$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')" \
              "$(realpath .venv)" "$(realpath nadcore)" \
              $(.venv/bin/python -c 'import site; print(*site.getsitepackages())'); do
    dir=$(realpath "$path")
    while [ "$dir" != "/" ]; do
      dir=$(dirname "$dir")
      if [ "$(stat -c %A "$dir" | cut -c10)" != "x" ] && [ "$(stat -c %A "$dir" | cut -c10)" != "t" ]; then
        chmod o+x "$dir"
        echo "install.sh: $dir is now searchable by $SANDBOX_USER (chmod o+x)" >&2
      fi
    done
  done
fi

# Headless Chromium for the web page's browser tests (tests/service/test_web.py, driven by
# Playwright with executable_path; `playwright install` is never needed).
[ -x /usr/bin/chromium ] || apt_install "the browser tests will fail" chromium chromium-driver || true
# curl: the README's download examples, which tests/service/test_readme.py and test_web_pages.py run.
command -v curl >/dev/null || apt_install "the README's curl examples will fail" curl || true
