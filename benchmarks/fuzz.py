"""Fuzz the built-in envs for a total number of env steps: random valid options (``mmrl.testing.random_options``),
random actions, every step checked (``mmrl.testing.fuzz_steps``: spaces, finite rewards, row 0 replaying alone).

Usage: ``python benchmarks/fuzz.py [--steps 10000000] [--num-envs 1024] [--steps-per-config 100] [--seed 0]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mmrl.core.memory import retain_freed_memory
from mmrl.testing import fuzz_steps, random_options

ENVS = ("mmrl/Recommend-v0", "mmrl/Navigate-v0", "mmrl/Diagnose-v0", "mmrl/Tutor-v0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10_000_000, help="total env steps (summed over rows)")
    parser.add_argument("--num-envs", type=int, default=1024)
    parser.add_argument("--steps-per-config", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    retain_freed_memory()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    total, configs, start = 0, {env: 0 for env in ENVS}, time.perf_counter()
    while total < args.steps:
        env_id = ENVS[sum(configs.values()) % len(ENVS)]  # the envs in turn
        options = random_options(env_id, rng)
        total += fuzz_steps(env_id, options, args.num_envs, args.steps_per_config, seed=int(rng.integers(2**31)))
        configs[env_id] += 1
    print(f"{total:,} env steps, {sum(configs.values())} configurations {configs}, no failure, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
