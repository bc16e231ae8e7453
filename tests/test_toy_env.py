"""Adding an env touches one file: a toy env defined here registers and passes the whole engine contract.

This is the "How to add an env" section of README.md as a test: params, state, pure transition,
observation, a declared value for the oracle, one ``register_env`` call; no other file of mmrl changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import Tensor

import mmrl
from mmrl.core import rng
from mmrl.core.batched_env import BatchedEnv, EnvState
from mmrl.core.params import build_params
from mmrl.core.renderer import SpriteRenderer
from mmrl.core.spaces import TextSpace, Vocabulary, image_space
from mmrl.testing import CONTRACT_CHECKS, Options

COLOURS = ("red", "green", "blue")
PALETTE = np.array([[220, 40, 40], [40, 200, 60], [50, 80, 230]], dtype=np.uint8)


@dataclass(frozen=True)
class MatchParams:
    image_size: int = 36
    max_steps: int = 8


@dataclass
class MatchState(EnvState):
    shown: Tensor  # int64[B], colour of the square in the image
    asked: Tensor  # int64[B], colour named in the text


class Match(BatchedEnv[MatchState]):
    """Is the square the colour the text names? Action 1 says yes, 0 no: +1 when right; a wrong answer ends
    the episode. The colour is only in the image, the question only in the text."""

    end_reasons = ("running", "wrong answer", "step limit")
    value_key = "expected_reward"

    def __init__(self, num_envs: int = 1, device: torch.device | str = "cpu", **params: object):
        super().__init__(num_envs, device)
        self.params = build_params(MatchParams, params, env_name="Match")
        size = self.params.image_size
        self.max_episode_steps = self.params.max_steps
        self.vocabulary = Vocabulary(["is", "it", *COLOURS])
        self.single_observation_space = spaces.Dict(
            {"image": image_space(size, size), "text": TextSpace(self.vocabulary, 3)}
        )
        self.single_action_space = spaces.Discrete(2)
        atlas = torch.from_numpy(np.broadcast_to(PALETTE[:, :, None, None], (3, 3, size, size)).copy())
        self.renderer = SpriteRenderer(atlas, 1, 1, size).to(self.device)
        self._words = torch.from_numpy(np.stack([self.vocabulary.encode(f"is it {c}") for c in COLOURS])).to(self.device)
        self._draws = rng.Draws(shown=1, asked=1)

    def _question(self, key: Tensor) -> tuple[Tensor, Tensor]:
        u = rng.uniform(key, self._draws.count)
        shown = rng.randint(u[:, self._draws.shown], len(COLOURS))
        asked = u[:, self._draws.asked]
        same = asked < 0.5  # half the questions name the colour shown; the other half another, uniformly
        other = (shown + 1 + rng.randint(asked * 2 - 1, len(COLOURS) - 1)) % len(COLOURS)
        return shown, torch.where(same, shown, other)

    def _initial_state(self, episode_key: Tensor) -> MatchState:
        shown, asked = self._question(episode_key)
        return MatchState(elapsed=torch.zeros_like(shown), shown=shown, asked=asked)

    def _transition(self, state: MatchState, actions: Tensor, step_key: Tensor):
        right = (actions == 1) == (state.shown == state.asked)
        shown, asked = self._question(step_key)
        reward = torch.where(right, 1.0, 0.0)
        info = {"right": right, "end_reason": (~right).to(torch.int64)}
        return dataclasses.replace(state, shown=shown, asked=asked), reward, ~right, info

    def _observe(self, state: MatchState) -> dict[str, Tensor]:
        return {"image": self.renderer.render(state.shown[:, None]), "text": self._words[state.asked]}

    def _decision_info(self, state: MatchState) -> dict[str, Tensor]:
        match = (state.shown == state.asked).to(torch.float32)
        return {"expected_reward": torch.stack([1 - match, match], dim=1)}


mmrl.register_env("mmrl-test/Match-v0", Match)


@pytest.mark.parametrize("check", CONTRACT_CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
def test_a_toy_env_passes_the_engine_contract(check: Callable[[str, Options], None]) -> None:
    check("mmrl-test/Match-v0", {})


def test_the_oracle_of_a_declared_value_answers_every_question_right() -> None:
    from mmrl.agents.reference import make_reference_policy
    from mmrl.episodes import run_episodes

    env = mmrl.make_batched("mmrl-test/Match-v0", num_envs=64)
    oracle = make_reference_policy("oracle", env)
    stats = run_episodes(env, oracle.act, seed=0, update=oracle.update)
    assert (stats.returns == env.max_episode_steps).all()
