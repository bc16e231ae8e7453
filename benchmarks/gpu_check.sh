#!/usr/bin/env bash
# The GPU check of issue #19, prepared to work on the first try in a short slot (8 minutes on one H200):
#   1. the CUDA tests (every test whose id names cuda; they skip on a machine without one);
#   2. env steps/s at N=4,096 and 65,536 for every env (benchmarks/env_throughput.py, tensors in and out);
#   3. stock SB3 PPO vs the device-resident FastPPO, training frames/s at n_envs=1,024 (benchmarks/train_throughput.py).
# Each step has its own time limit, so a slow one cannot starve the others, and everything goes to one results file.
# On a bare lent machine, fetch the missing wheels here first (bash benchmarks/gpu_wheels.sh) and carry .whl:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
# MMRL_GPU_CHECK_DEVICE=cpu runs the same script here on the CPU with small sizes (a dry run of the script itself).
# Usage: bash benchmarks/gpu_check.sh [results-file]   (default: $OUT/gpu_check.txt, else ./gpu_check.txt)
set -u -o pipefail
cd "$(dirname "$0")/.."
DEVICE=${MMRL_GPU_CHECK_DEVICE:-cuda}
RESULTS=${1:-${OUT:-.}/gpu_check.txt}
export PYTHONUNBUFFERED=1
if [ "$DEVICE" = cuda ]; then SIZES="4096 65536"; N_ENVS=1024; SECONDS_PER=2; WINDOW=10; else SIZES="64 256"; N_ENVS=64; SECONDS_PER=0.5; WINDOW=2; fi

log() { echo "$*" | tee -a "$RESULTS"; }
step() {  # step <limit-seconds> <title> <command...>: run, keep its output in the results, note a failure or timeout
    local limit=$1 title=$2; shift 2
    log ""; log "## $title  (limit ${limit} s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$RESULTS"
    local rc=${PIPESTATUS[0]}
    log "-> exit $rc after $((SECONDS - start)) s$([ "$rc" = 124 ] && echo ' (TIMED OUT)')"
}

: > "$RESULTS"
log "# mmrl gpu_check — $(date -u +%FT%TZ) — device $DEVICE — commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
if ! python3 -c "import gymnasium, stable_baselines3, hydra" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/mmrl-site .whl/*.whl \
            && export PYTHONPATH=/tmp/mmrl-site${PYTHONPATH:+:$PYTHONPATH}
    else
        log "missing gymnasium / stable-baselines3 / hydra and no .whl/: run bash benchmarks/gpu_wheels.sh here and carry .whl"; exit 2
    fi
fi
if ! python3 -c "import mmrl.envs" 2>/dev/null; then  # the envs, agents and configs folders map into the mmrl package
    python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 \
        || { log "could not install mmrl (pip install --no-deps --no-build-isolation -e .)"; exit 2; }
fi
python3 - <<'PY' 2>&1 | tee -a "$RESULTS"
import torch, gymnasium, stable_baselines3
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}; "
      f"gymnasium {gymnasium.__version__}, SB3 {stable_baselines3.__version__}")
PY

if [ "$DEVICE" = cuda ]; then
    step 150 "CUDA tests" python3 -m pytest -q -x -p no:cacheprovider -k cuda tests/test_engine.py tests/test_fast_agents.py tests/test_model_policy.py tests/test_runs.py tests/test_tutor.py tests/test_recommend_long.py
fi
for config in recommend recommend_long navigate diagnose tutor; do
    step 40 "env steps/s: $config" python3 benchmarks/env_throughput.py --config "$config" --device "$DEVICE" --sizes $SIZES --seconds "$SECONDS_PER" --no-compile
done
step 150 "training frames/s: PPO (SB3) vs FastPPO" python3 benchmarks/train_throughput.py --device "$DEVICE" --n-envs "$N_ENVS" --seconds "$WINDOW" --repeats 2 --skip-dqn
log ""; log "# done in $SECONDS s; results: $RESULTS"
