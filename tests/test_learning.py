"""Agents actually learn, and only when they both see and read (seeded; the setups are configs/experiment/*.yaml).

The full claim (slow), per experiment: PPO + the experiment's fusion (FiLM; concat on Navigate, cross-attention on Tutor) reaches >= 80%
(:data:`FULL_CLAIM` where the issue asks less: 70% on the long-term setting, where the reference is the planner) of the way
from random to the reference's mean return (the planner where the env offers one, else the oracle) in the
experiment's budget (``total_timesteps``), while the image-only and text-only ablations stay below 35%. The CI-sized versions train for fewer steps
(:data:`CI_STEPS`) and check that the fused agent already clears the 35% bar (:data:`CI_BAR` where it is lower; and, on Recommend, that neither
ablation does at a CI budget). Each config is composed as ``python -m mmrl.train experiment=<name>`` composes it.
"""

from __future__ import annotations

from importlib.resources import files

import pytest

from mmrl.configs.schema import TrainConfig
from mmrl.learning import reference_return, train_and_evaluate
from mmrl.train import compose_config

#: the training steps of each experiment's CI-sized check (fused >= 35% of the gap at seed 0)
CI_STEPS = {
    "recommend": 120_000, "diagnose": 150_000, "navigate": 80_000, "recommend_long": 500_000, "recommend_revenue": 200_000,
    "tutor": 150_000,
}  # fmt: skip
#: the CI bar where it is not 35%: Tutor passes 35% of the gap at about 150k-200k steps (BENCHMARKS.md)
CI_BAR = {"tutor": 0.25}
#: the share of the gap the full claim asks of the fused agent, where it is not 80%
FULL_CLAIM = {"recommend_long": 0.70, "recommend_revenue": 0.60, "tutor": 0.70}
#: the planner costs thousands of simulated steps per decision: its mean return is taken over fewer episodes
PLANNER_EPISODES = 250
EXPERIMENTS = sorted(p.name[:-5] for p in files("mmrl.configs").joinpath("experiment").iterdir() if p.name.endswith(".yaml"))


def experiment(name: str, *overrides: str) -> TrainConfig:
    return compose_config([f"experiment={name}", *overrides])


def gap_of(config: TrainConfig) -> tuple[float, float]:
    """Random's and the reference's mean return: the planner where the env offers one, else the oracle."""
    from mmrl.agents.reference import policy_names
    from mmrl.learning import held_out_env

    if "planner" in policy_names(held_out_env(config, episodes=1)):
        return reference_return("random", config), reference_return("planner", config, episodes=PLANNER_EPISODES)
    return reference_return("random", config), reference_return("oracle", config)


def share(value: float, gap: tuple[float, float]) -> float:
    random, oracle = gap
    return (value - random) / (oracle - random)


def test_every_experiment_has_a_ci_check() -> None:
    assert sorted(CI_STEPS) == EXPERIMENTS


@pytest.mark.parametrize("name", sorted(CI_STEPS))
def test_fused_agent_learns_within_a_ci_budget(name: str) -> None:
    config = experiment(name, f"total_timesteps={CI_STEPS[name]}")
    fused = train_and_evaluate(config)
    assert share(fused, gap_of(config)) >= CI_BAR.get(name, 0.35), (name, fused, gap_of(config))


@pytest.mark.parametrize("modality", ["image", "text"])
def test_one_modality_alone_does_not_learn_the_task(modality: str) -> None:
    config = experiment("recommend", "total_timesteps=50000", f"extractor.modalities=[{modality}]")
    ablated = train_and_evaluate(config)
    assert share(ablated, gap_of(config)) < 0.35, (modality, ablated, gap_of(config))


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_fused_reaches_80_percent_and_ablations_stay_below_35(name: str) -> None:
    config = experiment(name)
    gap = gap_of(config)
    fused = train_and_evaluate(config)
    assert share(fused, gap) >= FULL_CLAIM.get(name, 0.80), (name, fused, gap)
    for modality in ("image", "text"):
        ablated = train_and_evaluate(experiment(name, f"extractor.modalities=[{modality}]"))
        assert share(ablated, gap) < 0.35, (name, modality, ablated, gap)
