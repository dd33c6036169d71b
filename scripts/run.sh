#!/usr/bin/env bash
# The main job: set up ./.venv if needed, then serve fal's SD-Turbo example with a fleet of two
# runners on http://127.0.0.1:8080. With no GPU and no model weights here, runners use the tiny
# random-weight SD-Turbo pipeline on CPU; runner-0 compiles, runner-1 loads its kernels.
# Extra arguments go to `minifal run` (e.g. --port 9000 --workers 3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
exec .venv/bin/minifal run apps/sd_turbo.py --workers 2 "$@"
