#!/usr/bin/env bash
# Fetch, here, the wheels benchmarks/gpu_check.sh needs on a bare GPU machine (issue #19): the lent machine has
# Python 3.12 with a CUDA torch, numpy, transformers, OpenCV, rich, tqdm, TensorBoard and pytest, but not
# gymnasium, Stable-Baselines3 or Hydra, and cannot reach a package index. They go to .whl/ (git-ignored, about
# 1 MB), which the device call carries: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"]).
# Usage: bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -qx '/.whl/' .gitignore || echo '/.whl/' >> .gitignore
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "gymnasium>=1.0,<2" "stable-baselines3>=2.3,<3" "hydra-core>=1.3,<1.4" "omegaconf>=2.2,<2.4" farama-notifications
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3   # Hydra's parser; published as a source archive only
ls -l .whl
