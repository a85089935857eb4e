#!/usr/bin/env bash
# Create .venv with the package, the workflow and the test tools. Idempotent: a second run
# installs nothing new. TORCH_SPEC overrides the torch requirement (e.g. a CUDA build).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# Pinned so a CPU-only machine does not pull a multi-GB CUDA build as a dependency.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[test]"
