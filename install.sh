#!/usr/bin/env bash
# One-command setup: torch (the CPU wheel 2.13.0 when no torch is installed yet; an existing CUDA
# build is kept), then mmrl itself, editable, with its test tools.
# Usage: bash install.sh            (PYTHON=python3.11 bash install.sh to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python}"
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  # Pinned first so that no package pulls an unpinned torch (a CUDA build of several GB) instead.
  "$PYTHON" -m pip install "torch==2.13.0"
fi
"$PYTHON" -m pip install -e ".[dev]"
