"""Training frames per second: stock SB3 PPO / DQN vs mmrl's device-resident FastPPO / FastDQN (issue #6).

Everything is measured in this one run, side by side on the same env and model: the default training config
(``python -m mmrl.train``: easy Recommend, ``MultimodalExtractor`` with the patch encoder + bag-of-words text and
one FiLM block since issue #19, ``net_arch=[64]``, its PPO settings), the same ``n_envs``, ``n_steps`` and batch sizes:

* ``PPO (SB3)``: stock ``stable_baselines3.PPO`` on ``mmrl.make_vec(..., device)`` (numpy out);
* ``FastPPO``: :class:`mmrl.agents.fast.FastPPO` (``algo.device_resident=true``) on
  ``mmrl.make_vec(..., device, as_tensors=True)``;
* the same for ``DQN (SB3)`` / ``FastDQN`` (measured after ``learning_starts``);
* ``env only``: the batched env stepped with pre-drawn random actions at the same ``n_envs`` (the ceiling), and
  the numpy SB3 VecEnv face of it (what stock SB3 steps).

Each rate is the median over ``--repeats`` windows; stock and fast windows alternate (A B A B) so that load from
other processes hits both alike. For each agent the wall time is also split into rollout collection and
``train()`` (the unchanged SB3 losses), which is where the time goes. ``--profile`` adds a cProfile of FastPPO.
Frames/s alone do not say how soon an agent learns: ``benchmarks/time_to_target.py`` measures the wall time to a share
of the random-to-reference gap of whole training setups, A/B over seeds (issue #19).

Usage: ``python benchmarks/train_throughput.py [--device cpu] [--n-envs 256] [--seconds 15 | --timesteps N]``
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm

import mmrl
from mmrl.agents.fast import FastDQN, FastPPO
from mmrl.core.memory import retain_freed_memory
from mmrl.train import compose_config, extractor_kwargs

#: the default training config: its env, extractor and PPO settings
CONFIG = compose_config([])
ENV_ID = CONFIG.env.id
ENV_OPTIONS: dict[str, Any] = CONFIG.env.options
PPO_SETTINGS: dict[str, Any] = CONFIG.algo.hyperparams
POLICY_KWARGS: dict[str, Any] = dict(
    features_extractor_class=mmrl.MultimodalExtractor,
    features_extractor_kwargs=extractor_kwargs(CONFIG),
    **CONFIG.algo.policy_kwargs,
)
#: DQN settings for throughput: one gradient step of 256 per env step of n_envs, after a short warm-up.
DQN_SETTINGS: dict[str, Any] = dict(
    buffer_size=50_000, batch_size=256, train_freq=1, gradient_steps=1, target_update_interval=10_000,
    learning_rate=1e-4, gamma=0.5, exploration_fraction=0.3,
)  # fmt: skip


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class Timed:
    """Wraps a model's ``collect_rollouts`` and ``train`` (on the instance) to add up the wall time of each."""

    def __init__(self, model: BaseAlgorithm, device: str):
        self.model = model
        self.collect = self.train = 0.0
        self.collected = 0  # frames collected while timed
        for name in ("collect_rollouts", "train"):
            setattr(model, name, self._wrap(getattr(model, name), name, device))

    def _wrap(self, method: Callable[..., Any], name: str, device: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start, steps = time.perf_counter(), self.model.num_timesteps
            out = method(*args, **kwargs)
            sync(device)
            elapsed = time.perf_counter() - start
            if name == "train":
                self.train += elapsed
            else:
                self.collect += elapsed
                self.collected += self.model.num_timesteps - steps
            return out

        return timed


class Trainer:
    """One model, trained in windows of whole ``learn`` calls; each window's frames/s is kept."""

    def __init__(self, name: str, cls: type[BaseAlgorithm], tensors: bool, settings: dict[str, Any], args: argparse.Namespace):
        self.name, self.args = name, args
        env = mmrl.make_vec(ENV_ID, num_envs=args.n_envs, device=args.device, seed=0, as_tensors=tensors, **ENV_OPTIONS)
        self.model = cls("MultiInputPolicy", env, seed=0, device=args.device, policy_kwargs=POLICY_KWARGS, **settings)
        self.chunk = args.n_envs * (settings["n_steps"] if "n_steps" in settings else 8)
        self.rates: list[float] = []
        self.timed: Timed | None = None
        warmup = self.chunk if "n_steps" in settings else settings["learning_starts"] + self.chunk
        self.model.learn(warmup)  # first call: env reset, buffer fill past learning_starts, allocator warm-up
        sync(args.device)
        self.timed = Timed(self.model, args.device)

    def window(self) -> None:
        frames, start = 0, time.perf_counter()
        while True:
            self.model.learn(self.chunk, reset_num_timesteps=False)
            frames += self.chunk
            elapsed = time.perf_counter() - start
            if (self.args.timesteps and frames >= self.args.timesteps) or (
                not self.args.timesteps and elapsed >= self.args.seconds
            ):
                break
        self.rates.append(frames / elapsed)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    def split(self) -> str:
        assert self.timed is not None
        timed = self.timed
        total = timed.collect + timed.train
        return (
            f"time: collect {100 * timed.collect / total:4.1f}% / train {100 * timed.train / total:4.1f}%; "
            f"collection alone {self.collect_rate:,.0f} frames/s"
        )

    @property
    def collect_rate(self) -> float:
        assert self.timed is not None
        return self.timed.collected / max(self.timed.collect, 1e-9)


def env_rates(args: argparse.Namespace) -> tuple[float, float]:
    """Steps/s of the batched env (tensor actions) and of its numpy SB3 VecEnv face, at ``n_envs``."""
    env = mmrl.make_batched(ENV_ID, num_envs=args.n_envs, device=args.device, **ENV_OPTIONS)
    env.reset(seed=0)
    actions = torch.randint(env.single_action_space.n, (64, args.n_envs), device=args.device)
    venv = mmrl.make_vec(ENV_ID, num_envs=args.n_envs, device=args.device, seed=0, **ENV_OPTIONS)
    venv.reset()
    host_actions = actions.cpu().numpy()

    def rate(step: Callable[[int], Any]) -> float:
        results = []
        for _ in range(3):
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < max(args.seconds / 10, 0.5):
                step(calls % 64)
                calls += 1
            sync(args.device)
            results.append(calls * args.n_envs / (time.perf_counter() - start))
        return statistics.median(results)

    return rate(lambda i: env.step(actions[i])), rate(lambda i: venv.step(host_actions[i]))


def compare(stock: Trainer, fast: Trainer, repeats: int) -> None:
    for _ in range(repeats):
        stock.window()
        fast.window()
    for trainer in (stock, fast):
        rates = ", ".join(f"{r:,.0f}" for r in trainer.rates)
        print(f"  {trainer.name:<10} {trainer.rate:>9,.0f} frames/s   ({trainer.split()}; windows: {rates})")
    pairs = [f / s for s, f in zip(stock.rates, fast.rates, strict=True)]
    print(f"  ratio {fast.name} / {stock.name}: {fast.rate / stock.rate:.2f}x training frames/s (per window pair: "
          f"{', '.join(f'{p:.2f}' for p in pairs)}); collection alone {fast.collect_rate / stock.collect_rate:.2f}x")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-envs", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each timed window (whole learn calls)")
    parser.add_argument("--timesteps", type=int, default=0, help="frames per timed window instead of --seconds")
    parser.add_argument("--repeats", type=int, default=2, help="timed windows per agent (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for small nets)")
    parser.add_argument("--skip-dqn", action="store_true")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of FastPPO learn()")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if torch.device(args.device).type == "cpu":
        retain_freed_memory()  # as python -m mmrl.train does on the CPU: fresh observation buffers every step

    print(f"# train throughput — {datetime.date.today()} — {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}, device {args.device}")  # fmt: skip
    print(f"# command: python {' '.join(sys.argv)}")
    print(f"# env {ENV_ID} {ENV_OPTIONS}, n_envs={args.n_envs}, model MultimodalExtractor "
          f"{POLICY_KWARGS['features_extractor_kwargs']} policy {CONFIG.algo.policy_kwargs}")  # fmt: skip

    tensor_env, numpy_env = env_rates(args)
    print(f"env only (ceiling): batched env {tensor_env:,.0f} steps/s; numpy SB3 VecEnv face {numpy_env:,.0f} steps/s")

    print(f"PPO: {PPO_SETTINGS}")
    ppo = Trainer("PPO (SB3)", PPO, False, PPO_SETTINGS, args)
    fast_ppo = Trainer("FastPPO", FastPPO, True, PPO_SETTINGS, args)
    compare(ppo, fast_ppo, args.repeats)
    print(f"  FastPPO / env-only ceiling: {fast_ppo.rate / tensor_env:.3f}")
    del ppo, fast_ppo

    if not args.skip_dqn:
        settings = dict(DQN_SETTINGS, learning_starts=4 * args.n_envs)
        print(f"DQN: {settings}")
        dqn = Trainer("DQN (SB3)", DQN, False, settings, args)
        fast_dqn = Trainer("FastDQN", FastDQN, True, settings, args)
        compare(dqn, fast_dqn, args.repeats)
        print(f"  FastDQN / env-only ceiling: {fast_dqn.rate / tensor_env:.3f}")
        del dqn, fast_dqn

    if args.profile:
        trainer = Trainer("FastPPO", FastPPO, True, PPO_SETTINGS, args)
        profiler = cProfile.Profile()
        profiler.enable()
        trainer.model.learn(trainer.chunk, reset_num_timesteps=False)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
