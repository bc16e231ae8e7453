"""``DeviceDictRolloutBuffer``: SB3's ``DictRolloutBuffer`` with its storage as torch tensors on the policy's device.

Filled straight from the batched env's observation tensors (``image`` stays ``uint8``, ``text`` stays ``int64``),
GAE computed on the device (vectorised over envs, a loop over the ``n_steps`` time axis), and minibatches handed
to SB3's unchanged ``PPO.train`` as the same ``DictRolloutBufferSamples`` of tensors that the stock buffer builds
from numpy. Storage is allocated once (``torch.empty``: every slot is written before it is read), not per
rollout. Issue #6.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, DictRolloutBuffer
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples
from stable_baselines3.common.vec_env import VecNormalize
from torch import Tensor


def torch_dtype(space: spaces.Space) -> torch.dtype:
    """The torch dtype holding observations of ``space`` as the env emits them (``uint8`` images, ``int64`` ids)."""
    return torch.from_numpy(np.zeros(0, dtype=space.dtype)).dtype


def as_tensor(value: Tensor | np.ndarray, device: torch.device) -> Tensor:
    return value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value), device=device)


class DeviceDictRolloutBuffer(DictRolloutBuffer):
    """A rollout buffer for ``Dict`` observations whose every array is a tensor on ``device``.

    Same constructor, ``add`` / ``compute_returns_and_advantage`` / ``get`` contract and GAE as SB3's
    ``DictRolloutBuffer`` (to float32 rounding), so SB3's ``PPO.train`` runs on it unchanged. Layout is
    ``[n_steps, n_envs, ...]``. Arguments may be tensors on any device or numpy arrays.

    ``values`` and ``returns`` are read by ``PPO.train`` only for its ``explained_variance`` log, which is numpy code:
    they are numpy copies (one host copy per rollout); the device tensors are ``value_tensor`` / ``return_tensor``.

    :param buffer_size: ``n_steps``, the steps per env in a rollout.
    :param observation_space: a ``Dict`` space.
    :param action_space: the action space (actions are stored as float32 ``[action_dim]`` rows, as SB3 samples them).
    :param device: where the storage lives (the policy's device).
    :param gae_lambda: GAE's lambda.
    :param gamma: discount factor.
    :param n_envs: number of envs.
    """

    observations: dict[str, Tensor]  # type: ignore[assignment]

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        device: torch.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
    ):
        if not isinstance(observation_space, spaces.Dict):
            raise ValueError(f"DeviceDictRolloutBuffer needs a Dict observation space; got {observation_space}")
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.gae_lambda = gae_lambda
        self.gamma = gamma
        steps, envs, device = self.buffer_size, self.n_envs, self.device
        self.observations = {
            key: torch.empty((steps, envs, *shape), dtype=torch_dtype(observation_space[key]), device=device)
            for key, shape in self.obs_shape.items()
        }

        def storage(*shape: int) -> Tensor:
            return torch.empty((steps, envs, *shape), dtype=torch.float32, device=device)

        self.actions = storage(self.action_dim)  # type: ignore[assignment]
        self.rewards = storage()  # type: ignore[assignment]
        self.episode_starts = storage()  # type: ignore[assignment]
        self.value_tensor = storage()
        self.log_probs = storage()  # type: ignore[assignment]
        self.advantages = storage()  # type: ignore[assignment]
        self.return_tensor = storage()
        self.reset()

    # SB3's PPO.train logs explained_variance(buffer.values.flatten(), buffer.returns.flatten()) with numpy.
    @property
    def values(self) -> np.ndarray:  # type: ignore[override]
        return self.value_tensor.detach().cpu().numpy()

    @property
    def returns(self) -> np.ndarray:  # type: ignore[override]
        return self.return_tensor.detach().cpu().numpy()

    def reset(self) -> None:
        """Start a new rollout (the storage is reused: every slot is written before it is read)."""
        self.generator_ready = False
        BaseBuffer.reset(self)

    def add(  # type: ignore[override]
        self,
        obs: Mapping[str, Tensor | np.ndarray],
        action: Tensor | np.ndarray,
        reward: Tensor | np.ndarray,
        episode_start: Tensor | np.ndarray,
        value: Tensor,
        log_prob: Tensor,
    ) -> None:
        """Write one step of every env: ``obs`` ``{key: [n_envs, ...]}``, ``action`` ``[n_envs]`` or
        ``[n_envs, action_dim]``, ``reward`` / ``episode_start`` ``[n_envs]``, ``value`` ``[n_envs, 1]``,
        ``log_prob`` ``[n_envs]``."""
        if self.full:
            raise RuntimeError(f"rollout buffer is full ({self.buffer_size} steps); call reset() first")
        pos, device = self.pos, self.device
        for key, store in self.observations.items():
            store[pos].copy_(as_tensor(obs[key], device).reshape(store.shape[1:]), non_blocking=True)
        self.actions[pos].copy_(as_tensor(action, device).reshape(self.n_envs, self.action_dim), non_blocking=True)
        self.rewards[pos].copy_(as_tensor(reward, device), non_blocking=True)
        self.episode_starts[pos].copy_(as_tensor(episode_start, device), non_blocking=True)
        self.value_tensor[pos].copy_(value.detach().reshape(self.n_envs), non_blocking=True)
        self.log_probs[pos].copy_(log_prob.detach().reshape(self.n_envs), non_blocking=True)
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True

    @torch.no_grad()
    def compute_returns_and_advantage(self, last_values: Tensor, dones: Tensor | np.ndarray) -> None:  # type: ignore[override]
        """GAE(lambda) advantages and TD(lambda) returns, exactly SB3's recursion, on the device.

        :param last_values: value estimates of the observations after the last step, ``[n_envs]`` or ``[n_envs, 1]``.
        :param dones: whether the last step ended each env's episode, ``[n_envs]``.
        """
        last_values = last_values.detach().to(self.device, torch.float32).reshape(self.n_envs)
        dones = as_tensor(dones, self.device).to(self.device, torch.float32).reshape(self.n_envs)
        last_gae_lam = torch.zeros(self.n_envs, dtype=torch.float32, device=self.device)
        for step in reversed(range(self.buffer_size)):
            if step == self.buffer_size - 1:
                next_non_terminal = 1.0 - dones
                next_values = last_values
            else:
                next_non_terminal = 1.0 - self.episode_starts[step + 1]
                next_values = self.value_tensor[step + 1]
            delta = self.rewards[step] + self.gamma * next_values * next_non_terminal - self.value_tensor[step]
            last_gae_lam = delta + self.gamma * self.gae_lambda * next_non_terminal * last_gae_lam
            self.advantages[step] = last_gae_lam
        torch.add(self.advantages, self.value_tensor, out=self.return_tensor)

    def get(self, batch_size: int | None = None) -> Generator[DictRolloutBufferSamples, None, None]:  # type: ignore[override]
        """Minibatches of ``batch_size`` transitions, a fresh random permutation of all ``n_steps * n_envs`` of them
        (the last one smaller when ``batch_size`` does not divide the total)."""
        if not self.full:
            raise RuntimeError(f"rollout buffer holds {self.pos} of {self.buffer_size} steps; fill it before get()")
        total = self.buffer_size * self.n_envs
        indices = torch.randperm(total, device=self.device)
        if batch_size is None:
            batch_size = total
        self.generator_ready = True
        for start in range(0, total, batch_size):
            yield self._get_samples(indices[start : start + batch_size])

    def _get_samples(self, batch_inds: Tensor | np.ndarray, env: VecNormalize | None = None) -> DictRolloutBufferSamples:  # type: ignore[override]
        if env is not None:
            raise ValueError("DeviceDictRolloutBuffer does not normalise observations (no VecNormalize)")
        index = as_tensor(batch_inds, self.device).to(self.device, torch.int64)
        total = self.buffer_size * self.n_envs

        def take(tensor: Tensor) -> Tensor:  # [n_steps, n_envs, ...] viewed as [total, ...]; a view, no copy
            return tensor.reshape(total, *tensor.shape[2:]).index_select(0, index)

        return DictRolloutBufferSamples(
            observations={key: take(obs) for key, obs in self.observations.items()},
            actions=take(self.actions),
            old_values=take(self.value_tensor),
            old_log_prob=take(self.log_probs),
            advantages=take(self.advantages),
            returns=take(self.return_tensor),
        )
