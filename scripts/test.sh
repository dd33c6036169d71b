#!/usr/bin/env bash
# The test command: set up ./.venv if needed, lint, and run the whole suite (CPU only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/hadolint Dockerfile
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
