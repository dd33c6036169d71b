#!/usr/bin/env bash
# The test command: set up ./.venv if needed, lint, and run the whole suite (CPU only), printing
# why each skipped test was skipped.
#   scripts/test.sh [PYTEST_ARGS...]          every tier
#   scripts/test.sh --fast [PYTEST_ARGS...]   lint and the unit tier only (a contributor's loop);
#                                             it sets up ./.venv only when there is none yet
# Tiers and selectors: docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=false
if [ "${1:-}" = "--fast" ]; then
  fast=true
  shift
fi
if ! $fast || [ ! -x .venv/bin/python ]; then
  bash scripts/setup-env.sh
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/hadolint Dockerfile
if $fast; then
  exec .venv/bin/python -m pytest -q -p no:cacheprovider -m unit "$@"
fi
.venv/bin/python -m pytest -q -p no:cacheprovider -rs --durations=30 "$@"
