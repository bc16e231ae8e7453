"""Mean return of every reference policy an env offers, on the same episodes, with its wall time.

Usage: ``python benchmarks/reference_returns.py [--config recommend_long|tutor] [--episodes 2000] [--seed 0] [--set key=value]``
(``--config`` takes the env id and options of ``configs/env/<name>.yaml``). One batched env of ``--episodes``
instances plays one episode per row (row ``i`` seeded ``seed + i``) for each policy.
"""

from __future__ import annotations

import argparse
import time
from importlib.resources import files

import torch
import yaml

import mmrl
from mmrl.agents.reference import make_reference_policy, policy_names
from mmrl.core.memory import retain_freed_memory
from mmrl.episodes import run_episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="recommend_long", help="an env config of configs/env/")
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an env option of the config (a YAML value), e.g. --set reward=post_test")
    args = parser.parse_args()
    retain_freed_memory()
    torch.set_num_threads(1)
    config = yaml.safe_load(files("mmrl.configs").joinpath("env", f"{args.config}.yaml").read_text(encoding="utf-8"))
    options = dict(config.get("options") or {})
    for item in args.set:
        key, _, value = item.partition("=")
        options[key] = yaml.safe_load(value)
    config["options"] = options
    env = mmrl.make_batched(config["id"], num_envs=args.episodes, **options)
    task = env.task_metrics
    # the env's long-term signs, where it has them: return visits and clickbait (Recommend), quits and the post-test (Tutor)
    sums = tuple(k for k in ("returned", "clickbait_click", "quit", "post_test") if task is not None and k in task.sum_keys)
    print(f"# {config['id']} {config.get('options')}; {args.episodes} episodes from seed {args.seed}; {time.strftime('%Y-%m-%d')}")
    for name in [n for n in policy_names(env) if n != "oracle"]:
        policy = make_reference_policy(name, env, seed=args.seed)
        start = time.perf_counter()
        stats = run_episodes(env, policy.act, seed=args.seed, update=policy.update, sum_keys=sums)
        returns = stats.returns
        half = 1.96 * returns.std(ddof=1) / len(returns) ** 0.5
        extra = "".join(f"  {k} {stats.sums[k].mean():5.2f}" for k in sums)
        print(f"{name:8s} {returns.mean():6.2f} ± {half:4.2f}{extra}  {time.perf_counter() - start:6.1f} s", flush=True)


if __name__ == "__main__":
    main()
