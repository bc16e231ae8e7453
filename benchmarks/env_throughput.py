"""Env steps per second: mmrl's batched env vs Gymnasium's SyncVectorEnv, MiniGrid RGB, and a copy bound.

Everything is measured in this one run on this machine, and the ratios are printed side by side:

* ``batched N``: one batched env of N instances, random actions pre-drawn on the device;
* ``sync16``: Gymnasium's ``SyncVectorEnv`` over 16 single ``gym.make`` envs of the same task;
* ``minigrid``: MiniGrid's BabyAI-GoToLocal with 56x56 RGB observations (``pip install -e ".[bench]"``);
* ``copy bound``: observations per second of a plain tensor copy of the same observation bytes
  (image + text) at N=1024, i.e. the memory traffic an env must at least do to hand them out.

Usage: ``python benchmarks/env_throughput.py [--env mmrl/Recommend-v0] [--device cpu] [--seconds 2]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

import mmrl


def rate(step: Callable[[int], None], per_call: int, seconds: float, sync: Callable[[], None], repeats: int = 3) -> float:
    """Median over ``repeats`` timed windows of (calls * per_call) / elapsed."""
    for i in range(3):
        step(i)
    sync()
    results = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / repeats:
            step(calls)
            calls += 1
        sync()
        results.append(calls * per_call / (time.perf_counter() - start))
    return statistics.median(results)


def batched_rate(env_id: str, num_envs: int, device: str, seconds: float, sync: Callable[[], None]) -> float:
    env = mmrl.make_batched(env_id, num_envs=num_envs, device=device)
    env.reset(seed=0)
    actions = torch.randint(env.single_action_space.n, (64, num_envs), device=device)
    return rate(lambda i: env.step(actions[i % 64]), num_envs, seconds, sync)


def sync_vector_rate(env_id: str, num_envs: int, seconds: float) -> float:
    venv = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(num_envs)])
    venv.reset(seed=0)
    venv.action_space.seed(0)
    actions = [venv.action_space.sample() for _ in range(64)]
    return rate(lambda i: venv.step(actions[i % 64]), num_envs, seconds, lambda: None)


def minigrid_rate(seconds: float) -> float | None:
    try:
        import minigrid  # noqa: F401
        from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper
    except ImportError:
        return None
    env = ImgObsWrapper(RGBImgPartialObsWrapper(gym.make("BabyAI-GoToLocal-v0"), tile_size=8))
    env.reset(seed=0)
    rng = np.random.default_rng(0)

    def step(i: int) -> None:
        _, _, terminated, truncated, _ = env.step(int(rng.integers(3)))
        if terminated or truncated:
            env.reset()

    return rate(step, 1, seconds, lambda: None)


def copy_bounds(env_id: str, num_envs: int, device: str, seconds: float, sync: Callable[[], None]) -> tuple[float, float, int]:
    """Observations/s of copying the observation bytes into a preallocated buffer (the strict bound), and of
    copying them into fresh memory (``clone``: what an env that hands out new observations must at least do)."""
    space = gym.make(env_id).observation_space
    nbytes = sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in space.spaces.values())
    src = torch.randint(0, 255, (num_envs, nbytes), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    strict = rate(lambda i: dst.copy_(src), num_envs, seconds, sync)
    fresh = rate(lambda i: src.clone(), num_envs, seconds, sync)
    return strict, fresh, nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="mmrl/Recommend-v0")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 1024, 4096])
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    print(f"# {args.env} on {args.device}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"{platform.processor() or platform.machine()}; {time.strftime('%Y-%m-%d')}")
    rows: list[tuple[str, float]] = []
    batched = {}
    for n in args.sizes:
        batched[n] = batched_rate(args.env, n, args.device, args.seconds, sync)
        rows.append((f"batched N={n}", batched[n]))
    sync16 = sync_vector_rate(args.env, 16, args.seconds)
    rows.append(("SyncVectorEnv x16 (gym.make)", sync16))
    mini = minigrid_rate(args.seconds)
    if mini is not None:
        rows.append(("MiniGrid BabyAI-GoToLocal RGB 56x56, single env", mini))
    reference_n = 1024 if 1024 in batched else max(batched)
    bound, fresh, nbytes = copy_bounds(args.env, reference_n, args.device, args.seconds, sync)
    rows.append((f"copy bound N={reference_n} ({nbytes} B/obs, {bound * nbytes / 1e9:.2f} GB/s)", bound))
    rows.append((f"copy into fresh memory N={reference_n} ({fresh * nbytes / 1e9:.2f} GB/s)", fresh))

    width = max(len(name) for name, _ in rows)
    print(f"{'measurement':<{width}}  {'steps/s':>12}")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>12,.0f}")
    ref = batched[reference_n]
    print()
    print(f"batched N={reference_n} / SyncVectorEnv x16:  {ref / sync16:8.1f}x   (target >= 30x)")
    if mini is not None:
        print(f"batched N={reference_n} / MiniGrid RGB:       {ref / mini:8.1f}x   (target >= 50x)")
    else:
        print("MiniGrid not installed: pip install -e '.[bench]'")
    print(f"copy bound / batched N={reference_n}:         {bound / ref:8.1f}x   (target <= 5x)")
    print(f"fresh-memory copy / batched N={reference_n}:  {fresh / ref:8.1f}x")


if __name__ == "__main__":
    main()
