"""Scripted policies on Recommend's long-term setting that read the true state: what an image-only policy could reach
at best, and what matching the wish is worth (issue #14, BENCHMARKS.md).

Usage: ``python benchmarks/recommend_long_scripted.py [--episodes 1000] [--set key=value]``. Rows: ``random``,
``myopic``, ``careful`` (the env's references); ``random_genuine`` (any item without the badge); ``cheap_genuine``
(no badge, fewest price pips: all an image-only policy can see); ``wish_genuine`` (no badge, the wished category and
colour, price ignored). Shares are of the random-to-careful gap.
"""

from __future__ import annotations

import argparse
from importlib.resources import files

import torch
import yaml

import mmrl
from mmrl.agents.reference import make_reference_policy
from mmrl.episodes import run_episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an env option")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = yaml.safe_load(files("mmrl.configs").joinpath("env", "recommend_long.yaml").read_text(encoding="utf-8"))["options"]
    for item in args.set:
        key, _, value = item.partition("=")
        options[key] = yaml.safe_load(value)
    env = mmrl.make_batched("mmrl/Recommend-v0", num_envs=args.episodes, **options)
    noise = torch.Generator().manual_seed(0)

    def genuine_by(score: torch.Tensor, info: dict) -> torch.Tensor:
        jitter = 0.1 * torch.rand(score.shape, generator=noise)  # random among equals
        return torch.where(info["clickbait"], -99.0, score + jitter).argmax(dim=1)

    def random_genuine(obs: dict, info: dict) -> torch.Tensor:
        return genuine_by(torch.zeros(info["clickbait"].shape), info)

    def cheap_genuine(obs: dict, info: dict) -> torch.Tensor:
        return genuine_by(-env._item_tier[env.state.slate].float(), info)

    def wish_genuine(obs: dict, info: dict) -> torch.Tensor:
        s = env.state
        score = 2.0 * (env._item_category[s.slate] == s.want_category[:, None]) + (env._item_colour[s.slate] == s.want_colour[:, None])
        return genuine_by(score.float(), info)

    returns = {}
    for name in ("random", "myopic", "careful"):
        policy = make_reference_policy(name, env, seed=0)
        returns[name] = run_episodes(env, policy.act, seed=0, update=policy.update).mean_return
    for name, act in (("random_genuine", random_genuine), ("cheap_genuine", cheap_genuine), ("wish_genuine", wish_genuine)):
        returns[name] = run_episodes(env, act, seed=0).mean_return
    print(f"# mmrl/Recommend-v0 {options}; {args.episodes} episodes from seed 0")
    for name, value in returns.items():
        share = (value - returns["random"]) / (returns["careful"] - returns["random"])
        print(f"{name:15s} {value:6.2f}  {share:5.0%} of random->careful")


if __name__ == "__main__":
    main()
