"""Agents actually learn Recommend, and only when they both see and read (seeded; see mmrl/learning.py).

The full claim (slow): PPO + FiLM reaches >= 80% of the way from random to oracle mean return, while the
image-only and text-only ablations stay below 35%. The CI-sized version trains for fewer steps and checks
that the fused agent already clears the 35% bar that neither ablation reaches.
"""

from __future__ import annotations

import pytest

from mmrl.learning import evaluate_reference, train_and_evaluate


@pytest.fixture(scope="module")
def gap() -> tuple[float, float]:
    return evaluate_reference("random"), evaluate_reference("oracle")


def share(value: float, gap: tuple[float, float]) -> float:
    random, oracle = gap
    return (value - random) / (oracle - random)


def test_fused_agent_learns_within_a_ci_budget(gap: tuple[float, float]) -> None:
    fused = train_and_evaluate(seed=0, total_timesteps=120_000)
    assert share(fused, gap) >= 0.35, (fused, gap)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_one_modality_alone_does_not_learn_the_task(modality: str, gap: tuple[float, float]) -> None:
    ablated = train_and_evaluate(seed=0, total_timesteps=50_000, modalities=(modality,))
    assert share(ablated, gap) < 0.35, (modality, ablated, gap)


@pytest.mark.slow
def test_fused_reaches_80_percent_and_ablations_stay_below_35(gap: tuple[float, float]) -> None:
    fused = train_and_evaluate(seed=0, total_timesteps=240_000)
    assert share(fused, gap) >= 0.80, (fused, gap)
    for modality in ("image", "text"):
        ablated = train_and_evaluate(seed=0, total_timesteps=240_000, modalities=(modality,))
        assert share(ablated, gap) < 0.35, (modality, ablated, gap)
