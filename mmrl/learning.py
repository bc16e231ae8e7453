"""A reproducible learning setup: PPO + MultimodalExtractor on an easy Recommend configuration.

Shared by the learning tests (``tests/test_learning.py``) and the modality table
(``benchmarks/modality_table.py``), so the figures in BENCHMARKS.md and the tests measure the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmrl.episodes import run_episodes
from mmrl.registration import make_batched, make_vec

ENV_ID = "mmrl/Recommend-v0"
#: 32 px images and a 4 x 4 category/colour catalogue: the task still needs both modalities
#: (the 2x2 slate design is unchanged), but it learns in a few hundred thousand steps on a CPU.
EASY_RECOMMEND: dict[str, Any] = dict(image_size=32, num_categories=4, num_colours=4)
#: PPO settings that learn the easy task: the task is nearly a contextual bandit, so a short horizon.
PPO_SETTINGS: dict[str, Any] = dict(
    n_steps=64, batch_size=512, n_epochs=4, learning_rate=1e-3, gamma=0.5, ent_coef=0.0
)
EVAL_EPISODES = 1000
EVAL_SEED = 1_000_000


def extractor_kwargs(fusion: str, modalities: Sequence[str]) -> dict[str, Any]:
    """A small extractor (8-16-16 CNN, bag-of-words text) that is cheap enough for CPU training."""
    return dict(
        fusion=fusion, text_encoder="bag", features_dim=128, modalities=tuple(modalities), image_channels=(8, 16, 16)
    )


def evaluate_model(model: Any, episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED) -> float:
    """Mean return of ``model``'s deterministic policy over ``episodes`` held-out episodes (one batched env)."""
    env = make_batched(ENV_ID, num_envs=episodes, **EASY_RECOMMEND)

    def act(obs: dict[str, torch.Tensor], info: dict) -> torch.Tensor:
        actions, _ = model.predict({k: v.numpy() for k, v in obs.items()}, deterministic=True)
        return torch.as_tensor(actions)

    return run_episodes(env, act, seed=seed).mean_return


def evaluate_reference(name: str, episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED) -> float:
    """Mean return of the ``random``/``greedy``/``oracle`` reference policy on the same episodes."""
    from mmrl.agents.reference import make_reference_policy

    env = make_batched(ENV_ID, num_envs=episodes, **EASY_RECOMMEND)
    policy = make_reference_policy(name, env, seed=seed)
    return run_episodes(env, policy.act, seed=seed, update=policy.update).mean_return


def train_and_evaluate(
    seed: int,
    total_timesteps: int,
    fusion: str = "film",
    modalities: Sequence[str] = ("image", "text"),
    num_envs: int = 32,
    threads: int = 1,
) -> float:
    """Train PPO on the easy Recommend task and return the evaluation mean return."""
    from stable_baselines3 import PPO

    from mmrl.extractors.multimodal import MultimodalExtractor

    torch.set_num_threads(threads)
    env = make_vec(ENV_ID, num_envs=num_envs, seed=seed, **EASY_RECOMMEND)
    model = PPO(
        "MultiInputPolicy",
        env,
        seed=seed,
        verbose=0,
        policy_kwargs=dict(
            features_extractor_class=MultimodalExtractor,
            features_extractor_kwargs=extractor_kwargs(fusion, modalities),
            net_arch=[64],
        ),
        **PPO_SETTINGS,
    )
    model.learn(total_timesteps)
    return evaluate_model(model)
