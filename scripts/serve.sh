#!/usr/bin/env bash
# The README's run command: installs the project into .venv, then starts the API and a worker on
# embedded defaults (SQLite, a filesystem broker and blob store under ./var; no server needed).
# It prints the URL and a local API key. Arguments go to `nads serve` (e.g. --port 8080).
# Set NADS_DATABASE_URL / NADS_BROKER_URL / NADS_BLOB_DIR to use Postgres, Redis, shared storage.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/nads serve "$@"
