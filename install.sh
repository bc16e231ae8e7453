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
# The browser test (tests/test_browser.py) plays the evaluation report's videos in headless Chromium through
# Debian's chromium + chromium-driver (never a browser downloaded by a test tool). Root on Debian only; elsewhere
# the test skips and says why.
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi
