#!/usr/bin/env bash
# Installs the project into .venv (if needed) and runs lint + the whole test suite.
# Starts PostgreSQL and Redis when they are not running (the service tests use the real ones).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-services.sh
bash scripts/install.sh
.venv/bin/ruff check .
.venv/bin/lint-imports  # the layering contracts in pyproject.toml (import-linter)
# Three test processes (pytest-xdist), a file each at a time: the service tests spend much of
# their time waiting on workers, brokers and browsers, so on this 2-core machine three keep both
# cores busier than two (907 tests: 17.9 min with three, beside a nice-19 build; about 20 min
# with two). NADS_TEST_PROCESSES=0 runs it in one process. Each process takes its own Redis
# database, 13 + its index (tests/fixtures.py): at most three fit below Redis's 16. Four
# (NADS_TEST_REDIS_DB=12) gained nothing on 2026-12-07: 21.0 min beside the two catalog
# builds, against 20.8 with three beside the builds and other tests; the cores bound it now.
# --durations: the slowest tests at the end, to keep the suite inside its 15 minutes
.venv/bin/python -m pytest -q -p no:cacheprovider -n "${NADS_TEST_PROCESSES:-3}" --dist loadfile \
  --durations=25 "$@"
