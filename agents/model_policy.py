"""An SB3 / sb3-contrib model acting on a batched env with tensors on the env's device.

:class:`ModelPolicy` gives a trained model the ``act(obs, info)`` / ``update(info, done)`` pair that
:func:`mmrl.episodes.run_episodes` drives. It calls the model's policy network directly on the observation
tensors (``policy._predict`` under ``torch.no_grad``, as ``model.predict`` does after its numpy conversion), so
a CUDA evaluation never copies observations to the host and back. It acts as ``model.predict`` would:

* PPO, A2C: the policy's most likely action (``deterministic=True``) or a sample from it;
* DQN: the greedy action, or with ``deterministic=False`` SB3's epsilon-greedy: one draw against
  ``exploration_rate`` for the whole batch, then a uniform action per row from the action space's generator;
* RecurrentPPO (sb3-contrib): the LSTM state is carried from step to step, and reset in the rows whose episode
  has just ended (``update``'s ``done``, passed on as the next step's ``episode_starts``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from torch import Tensor

from mmrl.core.batched_env import BatchedEnv, Info, Observation


class ModelPolicy:
    """``model`` as a policy for :func:`~mmrl.episodes.run_episodes` on ``env``.

    :param model: a trained (or loaded) SB3 / sb3-contrib algorithm with a ``Discrete`` action space.
    :param env: the batched env it acts on; its observation space must have the model's keys and shapes.
    :param deterministic: most likely (greedy) actions instead of samples (or, for DQN, epsilon-greedy ones).
    :raises ValueError: when the env lacks a key the model reads or gives it another shape (naming both).
    """

    def __init__(self, model: BaseAlgorithm, env: BatchedEnv, deterministic: bool = True):
        if not isinstance(model.action_space, spaces.Discrete):
            raise ValueError(f"ModelPolicy supports Discrete action spaces only; the model has {model.action_space}")
        self.model = model
        self.policy = model.policy
        self.deterministic = deterministic
        self.output_device = torch.device(env.device)
        self.keys = list(model.observation_space.spaces)  # type: ignore[attr-defined]
        for key in self.keys:
            if key not in env.single_observation_space.spaces:
                raise ValueError(f"the model reads observation key {key!r}, which the env does not have")
            want, got = model.observation_space[key].shape, env.single_observation_space[key].shape  # type: ignore[index]
            vocabularies = [getattr(space, "vocabulary", None) for space in (model.observation_space[key], env.single_observation_space[key])]  # type: ignore[index]
            if None not in vocabularies and vocabularies[0] != vocabularies[1]:
                words = [w for w in vocabularies[0].words if w not in vocabularies[1]][:5]
                raise ValueError(
                    f"the model reads {key} with another vocabulary than the env's (the model's {words} are not the env's "
                    "words, or the order differs): are env.options the run's?"
                )
            if want != got:
                raise ValueError(f"the model expects {key} of shape {want}, the env gives {got}: are env.options the run's?")
        self.num_envs = env.num_envs
        self.lstm_states: tuple[Tensor, Tensor] | None = None
        self.episode_starts = torch.ones(env.num_envs, dtype=torch.float32, device=self.policy.device)
        shape = getattr(self.policy, "lstm_hidden_state_shape", None)  # (layers, 1, hidden): recurrent policies only
        if shape is not None:
            zeros = torch.zeros(shape[0], env.num_envs, shape[2], dtype=torch.float32, device=self.policy.device)
            self.lstm_states = (zeros, zeros.clone())

    @property
    def recurrent(self) -> bool:
        return self.lstm_states is not None

    def act(self, obs: Observation, info: Info) -> Tensor:
        """The model's actions, int64[B] on the env's device."""
        if not self.deterministic and self._explores():
            return self._random_actions()
        self.policy.set_training_mode(False)
        device = self.policy.device
        batch = {key: obs[key].to(device, non_blocking=True) for key in self.keys}
        with torch.no_grad():
            if self.lstm_states is None:
                actions = self.policy._predict(batch, deterministic=self.deterministic)  # type: ignore[arg-type]
            else:
                actions, states = self.policy._predict(  # type: ignore[call-arg]
                    batch, lstm_states=self.lstm_states, episode_starts=self.episode_starts,
                    deterministic=self.deterministic,
                )  # fmt: skip
                self.lstm_states = (states[0], states[1])
                self.episode_starts = torch.zeros_like(self.episode_starts)  # until update() says otherwise
        return actions.reshape(-1).to(self.output_device, torch.int64)

    def update(self, info: Info, done: Tensor) -> None:
        """Rows that just finished start a new episode at the next step (the LSTM state is reset there)."""
        self.episode_starts = done.to(self.policy.device, torch.float32).reshape(-1)

    def _explores(self) -> bool:
        """DQN's exploration coin (``DQN.predict``): one draw from numpy's global generator for the whole batch."""
        rate: Any = getattr(self.model, "exploration_rate", None)
        return rate is not None and np.random.rand() < rate

    def _random_actions(self) -> Tensor:
        """One ``action_space.sample()`` per row, as ``DQN.predict`` draws them (the space's own generator)."""
        actions = np.array([self.model.action_space.sample() for _ in range(self.num_envs)], dtype=np.int64)
        return torch.from_numpy(actions).to(self.output_device)
