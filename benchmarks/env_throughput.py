"""Env steps per second: mmrl's batched env vs Gymnasium's SyncVectorEnv, MiniGrid RGB, and a copy bound.

Everything is measured in this one run on this machine, and the ratios are printed side by side:

* ``batched N``: one batched env of N instances, random actions pre-drawn on the device;
* ``batched N compiled``: the same at the reference N with ``compile=True`` (``torch.compile`` fuses
  step and reset; the compilation, tens of seconds, happens before the timing);
* ``sync16``: Gymnasium's ``SyncVectorEnv`` over 16 single ``gym.make`` envs of the same task;
* ``minigrid``: MiniGrid's BabyAI-GoToLocal with 56x56 RGB observations (``pip install -e ".[bench]"``);
* ``copy bound``: observations per second of a plain tensor copy of the same observation bytes
  (image + text) at N=1024, i.e. the memory traffic an env must at least do to hand them out. The
  ``paired`` copy-bound ratios time the env and the copy in alternating short windows and take the
  median ratio: on a shared machine whose speed drifts, separate measurements minutes apart can
  disagree by 2x, alternating windows do not.

Usage: ``python benchmarks/env_throughput.py [--env mmrl/Recommend-v0 | --config recommend_long | --config tutor] [--device cpu] [--seconds 2]``
(``--config`` takes the env id and options of ``configs/env/<name>.yaml``, as ``python -m mmrl.train env=<name>``).
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

import mmrl
from mmrl.core.memory import retain_freed_memory


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


def paired_ratio(
    reference: Callable[[int], None], subject: Callable[[int], None], seconds: float, sync: Callable[[], None], rounds: int = 15
) -> float:
    """Median over ``rounds`` of (calls/s of ``reference``) / (calls/s of ``subject``), the two timed in
    alternating short windows, so that a machine whose speed drifts (a shared VM) slows both alike."""
    for i in range(3):
        reference(i)
        subject(i)
    sync()
    ratios = []
    for _ in range(rounds):
        window = []
        for fn in (reference, subject):
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / (2 * rounds):
                fn(calls)
                calls += 1
            sync()
            window.append(calls / (time.perf_counter() - start))
        ratios.append(window[0] / window[1])
    return statistics.median(ratios)


#: the env's options (``--config``), for every env this script builds
OPTIONS: dict = {}


def batched_env(env_id: str, num_envs: int, device: str, compile: bool = False) -> Callable[[int], None]:
    """A step function of a reset batched env (compiled and warmed up when ``compile``)."""
    env = mmrl.make_batched(env_id, num_envs=num_envs, device=device, compile=compile, **OPTIONS)
    env.reset(seed=0)
    actions = torch.randint(env.single_action_space.n, (64, num_envs), device=device)
    if compile:  # compile every graph (full-batch step, sub-batch resets of several sizes) before timing
        for i in range(64):
            env.step(actions[i])
    # torch.compile leaves ~1e6 long-lived Python objects; without this every full pass of the garbage
    # collector re-scans them (10+ ms stalls, every few dozen steps, in compiled and eager envs alike)
    gc.collect()
    gc.freeze()
    return lambda i: env.step(actions[i % 64])


def batched_rate(
    env_id: str, num_envs: int, device: str, seconds: float, sync: Callable[[], None], compile: bool = False
) -> float:
    return rate(batched_env(env_id, num_envs, device, compile), num_envs, seconds, sync)


def sync_vector_rate(env_id: str, num_envs: int, seconds: float) -> float:
    venv = gym.vector.SyncVectorEnv([lambda: gym.make(env_id, **OPTIONS) for _ in range(num_envs)])
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
    space = gym.make(env_id, **OPTIONS).observation_space
    nbytes = sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in space.spaces.values())
    src = torch.randint(0, 255, (num_envs, nbytes), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    strict = rate(lambda i: dst.copy_(src), num_envs, seconds, sync)
    fresh = rate(lambda i: src.clone(), num_envs, seconds, sync)
    return strict, fresh, nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="mmrl/Recommend-v0")
    parser.add_argument("--config", help="an env config of configs/env/ (its id and options; overrides --env)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 1024, 4096])
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on 2 cores)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile=True measurement")
    args = parser.parse_args()
    if args.config:
        from importlib.resources import files

        import yaml

        config = yaml.safe_load(files("mmrl.configs").joinpath("env", f"{args.config}.yaml").read_text(encoding="utf-8"))
        args.env = config["id"]
        OPTIONS.update(config.get("options") or {})
    retain_freed_memory()  # every step allocates fresh observations: keep freed pages (no page faults)
    torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    print(f"# {args.env} {OPTIONS or ''} on {args.device}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"{platform.processor() or platform.machine()}; {time.strftime('%Y-%m-%d')}")
    rows: list[tuple[str, float]] = []
    batched = {}
    for n in args.sizes:
        batched[n] = batched_rate(args.env, n, args.device, args.seconds, sync)
        rows.append((f"batched N={n}", batched[n]))
    reference_n = 1024 if 1024 in batched else max(batched)
    compiled = None
    if not args.no_compile:
        compiled = batched_rate(args.env, reference_n, args.device, args.seconds, sync, compile=True)
        rows.append((f"batched N={reference_n} compiled", compiled))
    sync16 = sync_vector_rate(args.env, 16, args.seconds)
    rows.append(("SyncVectorEnv x16 (gym.make)", sync16))
    mini = minigrid_rate(args.seconds)
    if mini is not None:
        rows.append(("MiniGrid BabyAI-GoToLocal RGB 56x56, single env", mini))
    bound, fresh, nbytes = copy_bounds(args.env, reference_n, args.device, args.seconds, sync)
    rows.append((f"copy bound N={reference_n} ({nbytes} B/obs, {bound * nbytes / 1e9:.2f} GB/s)", bound))
    rows.append((f"copy into fresh memory N={reference_n} ({fresh * nbytes / 1e9:.2f} GB/s)", fresh))

    width = max(len(name) for name, _ in rows)
    print(f"{'measurement':<{width}}  {'steps/s':>12}")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>12,.0f}")
    # the copy-bound ratios again, each from alternating windows of the env and the copy (robust to drift)
    space = gym.make(args.env, **OPTIONS).observation_space
    nbytes = sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in space.spaces.values())
    src = torch.randint(0, 255, (reference_n, nbytes), dtype=torch.uint8, device=args.device)
    dst = torch.empty_like(src)
    paired = {}
    for label, flag in (("", False), (" compiled", True)):
        if flag and args.no_compile:
            continue
        paired[label] = paired_ratio(lambda i: dst.copy_(src), batched_env(args.env, reference_n, args.device, flag),
                                     2 * args.seconds, sync)  # fmt: skip
    for label, ref in (("", batched[reference_n]), (" compiled", compiled)):
        if ref is None:
            continue
        name = f"batched N={reference_n}{label}"
        print()
        print(f"{name} / SyncVectorEnv x16: {ref / sync16:8.1f}x   (target >= 30x)")
        if mini is not None:
            print(f"{name} / MiniGrid RGB:      {ref / mini:8.1f}x   (target >= 50x)")
        else:
            print("MiniGrid not installed: pip install -e '.[bench]'")
        print(f"copy bound / {name}:        {bound / ref:8.1f}x   (target <= 5x)")
        print(f"fresh-memory copy / {name}: {fresh / ref:8.1f}x")
        print(f"copy bound / {name}, paired:{paired[label]:8.1f}x   (alternating windows; target <= 5x)")


if __name__ == "__main__":
    main()
