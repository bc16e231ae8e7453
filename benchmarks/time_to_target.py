"""Wall time to a share of the random-to-reference gap: training setups A/B, in one sitting, over seeds (issue #19).

Each setup is a training command line (``python -m mmrl.train`` overrides, composed as the CLI composes them). It
trains in chunks of ``--eval-every`` steps; after each chunk the deterministic policy is measured on the same
``--eval-episodes`` held-out episodes as random and the reference (the env's planner where it has one, else the
oracle), and the training wall time (evaluations excluded) at the first chunk past ``--target`` is its time to
target. At the end of the budget the final return is measured on 1,000 held-out episodes with its 95% interval.
Setups alternate within each seed (A B, then B A for the next seed), so that load from other processes hits both.

Usage::

    python benchmarks/time_to_target.py --base "" --setups old="algo.hyperparams.n_epochs=4" new="algo.hyperparams.n_epochs=1"
    python benchmarks/time_to_target.py --base experiment=diagnose --setups ...   # --seeds 0 1 2 --target 0.8
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import statistics
import sys
import time
from typing import Any

import torch

from mmrl.agents.model_policy import ModelPolicy
from mmrl.agents.reference import policy_names
from mmrl.core.memory import retain_freed_memory
from mmrl.episodes import run_episodes
from mmrl.learning import held_out_env, model_return, reference_return
from mmrl.metrics import gap_share, summarize
from mmrl.runs import resolve_device
from mmrl.train import build_model, compose_config, make_train_env

FINAL_EPISODES = 1000


def rollout_size(model: Any) -> int:
    """Steps per ``learn`` unit: a whole PPO/A2C rollout, or one vec-env step for off-policy algorithms."""
    return int(getattr(model, "n_steps", 1)) * int(model.n_envs)


def run_setup(overrides: list[str], seed: int, args: argparse.Namespace, gap: tuple[float, float]) -> dict[str, Any]:
    config = compose_config([*overrides, f"seed={seed}"])
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    model = build_model(config, make_train_env(config, device), device)
    unit = rollout_size(model)
    chunk = max(unit, args.eval_every // unit * unit)
    trained, wall, curve, reached = 0, 0.0, [], None
    while trained < config.total_timesteps:
        start = time.perf_counter()
        model.learn(chunk, reset_num_timesteps=trained == 0)
        wall += time.perf_counter() - start
        trained = model.num_timesteps
        share = gap_share(model_return(model, config, args.eval_episodes, args.eval_seed), *gap)
        curve.append((trained, round(wall, 1), round(share or 0.0, 3)))
        if reached is None and share is not None and share >= args.target:
            reached = (trained, wall)
    env = held_out_env(config, FINAL_EPISODES)
    policy = ModelPolicy(model, env, deterministic=True)
    final = summarize(run_episodes(env, policy.act, seed=args.eval_seed, update=policy.update).returns)
    return {
        "seed": seed, "steps": trained, "wall_s": round(wall, 1), "fps": round(trained / wall, 1),
        "time_to_target_s": None if reached is None else round(reached[1], 1),
        "steps_to_target": None if reached is None else reached[0],
        "final_mean": final["mean"], "final_ci95": final["ci95"], "final_share": gap_share(float(final["mean"]), *gap),
        "curve": curve,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="", help="overrides every setup shares, e.g. 'experiment=diagnose'")
    parser.add_argument("--setups", nargs="+", required=True, help="name=\"overrides\" pairs, e.g. old=\"\" new=\"n_envs=64\"")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=0.8, help="share of the random-to-reference gap")
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=256)
    parser.add_argument("--eval-seed", type=int, default=1_000_000)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    setups = {name: shlex.split(text) for name, text in (s.split("=", 1) for s in args.setups)}
    base = shlex.split(args.base)
    retain_freed_memory()  # as python -m mmrl.train does on the CPU

    config = compose_config(base)
    planner = "planner" in policy_names(held_out_env(config, episodes=1))
    reference = "planner" if planner else "oracle"
    gap = (reference_return("random", config, args.eval_episodes, args.eval_seed),
           reference_return(reference, config, args.eval_episodes, args.eval_seed))  # fmt: skip
    print(f"# time to {args.target:.0%} of the gap — {datetime.date.today()} — {platform.machine()}, torch {torch.__version__}")
    print(f"# command: python {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"# base {base or '(python -m mmrl.train defaults)'}: random {gap[0]:.3f}, {reference} {gap[1]:.3f} on {args.eval_episodes} episodes")

    results: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
    for i, seed in enumerate(args.seeds):
        order = list(setups) if i % 2 == 0 else list(reversed(setups))
        for name in order:
            row = run_setup([*base, *setups[name]], seed, args, gap)
            results[name].append(row)
            reached = "not reached" if row["time_to_target_s"] is None else f"{row['time_to_target_s']:.0f} s ({row['steps_to_target']:,} steps)"
            print(f"{name:<8} seed {seed}: to target {reached}; {row['fps']:,.0f} frames/s; final {row['final_mean']:.3f} "
                  f"[{row['final_ci95'][0]:.3f}, {row['final_ci95'][1]:.3f}] = {row['final_share']:.0%} of the gap "
                  f"after {row['steps']:,} steps, {row['wall_s']:.0f} s", flush=True)  # fmt: skip

    print("\n| setup | overrides | time to target, s (per seed) | mean | frames/s | final share (per seed) |")
    print("|---|---|---|---|---|---|")
    for name, rows in results.items():
        times = [r["time_to_target_s"] for r in rows]
        mean = statistics.mean(times) if None not in times else float("nan")
        print(f"| {name} | `{' '.join(setups[name]) or '-'}` | {', '.join('-' if t is None else f'{t:.0f}' for t in times)} | "
              f"{mean:.0f} | {statistics.mean(r['fps'] for r in rows):,.0f} | "
              f"{', '.join(format(r['final_share'], '.0%') for r in rows)} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"base": base, "setups": setups, "gap": gap, "reference": reference, "results": results}, file, indent=1)


if __name__ == "__main__":
    main()
