"""Does it learn? Train what a training config describes and measure the policy on held-out episodes.

The learning setups are the experiment configs, ``configs/experiment/<name>.yaml`` (env, algorithm settings,
extractor and the budget of the claim). The learning tests (``tests/test_learning.py``), the modality-table
benchmark (``benchmarks/modality_table.py``) and BENCHMARKS.md's command lines all start from the same composed
config, so they measure what ``python -m mmrl.train experiment=<name>`` trains::

    from mmrl.learning import reference_return, train_and_evaluate
    from mmrl.train import compose_config

    config = compose_config(["experiment=navigate", "extractor.modalities=[text]", "total_timesteps=80000"])
    fused = train_and_evaluate(config)
    random, oracle = (reference_return(name, config) for name in ("random", "oracle"))

Every policy is measured on the same :data:`EVAL_EPISODES` episodes (episode ``i`` seeded ``EVAL_SEED + i``),
apart from the training seeds and larger than a run's periodic evaluation, so that the shares of the
random-to-oracle gap that the claims compare are tight.
"""

from __future__ import annotations

import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from mmrl.agents.model_policy import ModelPolicy
from mmrl.agents.reference import make_reference_policy
from mmrl.configs.schema import TrainConfig
from mmrl.core.batched_env import BatchedEnv
from mmrl.episodes import run_episodes
from mmrl.registration import make_batched
from mmrl.runs import resolve_device
from mmrl.train import build_model, make_train_env

EVAL_EPISODES = 1000
EVAL_SEED = 1_000_000


def held_out_env(config: TrainConfig, episodes: int = EVAL_EPISODES) -> BatchedEnv:
    """The batched env of the held-out episodes: ``config``'s env, one episode per instance, on its device."""
    return make_batched(config.env.id, num_envs=episodes, device=resolve_device(config.device), **config.env.options)


def model_return(model: BaseAlgorithm, config: TrainConfig, episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED) -> float:
    """Mean return of ``model``'s deterministic policy over ``episodes`` held-out episodes of ``config``'s env."""
    env = held_out_env(config, episodes)
    policy = ModelPolicy(model, env, deterministic=True)
    return run_episodes(env, policy.act, seed=seed, update=policy.update).mean_return


def reference_return(name: str, config: TrainConfig, episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED) -> float:
    """Mean return of the ``random``/``greedy``/``oracle`` reference policy on the same held-out episodes."""
    env = held_out_env(config, episodes)
    policy = make_reference_policy(name, env, seed=seed)
    return run_episodes(env, policy.act, seed=seed, update=policy.update).mean_return


def train_and_evaluate(config: TrainConfig, episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED) -> float:
    """Train ``config``'s agent for ``config.total_timesteps`` steps (no run directory, no periodic evaluation) and
    return :func:`model_return` of the final policy."""
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    model = build_model(config, make_train_env(config, device), device)
    model.learn(config.total_timesteps)
    return model_return(model, config, episodes, seed)
