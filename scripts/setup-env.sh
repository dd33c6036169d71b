#!/usr/bin/env bash
# Create ./.venv with minifal and everything its tests and the SD-Turbo example need.
# Idempotent: a second run only checks. torch comes first and pinned, so that pip never pulls a
# different (multi-GB) build in as a dependency of diffusers.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==${MINIFAL_TORCH_VERSION:-2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[sd,dev]"

# The reference: fal's real SDK in a venv of its own (never in .venv, where minifal must not be
# shadowed). scripts/fal_compat_table.py reads its public names; the compatibility test needs it.
FAL_REFERENCE_VERSION=1.83.0
if ! .venv-fal/bin/python -I -c "import fal, sys; sys.exit(fal.__version__ != '$FAL_REFERENCE_VERSION')" 2>/dev/null; then
  "$python" -m venv .venv-fal
  .venv-fal/bin/python -m pip install -q "fal==$FAL_REFERENCE_VERSION"
fi
