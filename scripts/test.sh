#!/usr/bin/env bash
# Installs the project into .venv (if needed) and runs lint + the whole test suite.
# Starts PostgreSQL and Redis when they are not running (the service tests use the real ones).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-services.sh
bash scripts/install.sh
.venv/bin/ruff check .
.venv/bin/lint-imports  # the layering contracts in pyproject.toml (import-linter)
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
