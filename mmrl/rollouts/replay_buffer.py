"""``DeviceDictReplayBuffer``: SB3's ``DictReplayBuffer`` with its storage as torch tensors on the policy's device.

Transitions are written from the batched env's tensors (observations in their own dtypes: ``uint8`` images,
``int64`` token ids, so a transition costs what the env emitted, not 4x as float32) and sampled on the device
into the ``DictReplayBufferSamples`` that SB3's unchanged ``DQN.train`` reads. Issue #6.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, DictReplayBuffer
from stable_baselines3.common.type_aliases import DictReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize
from torch import Tensor

from mmrl.rollouts.rollout_buffer import as_tensor, torch_dtype


class DeviceDictReplayBuffer(DictReplayBuffer):
    """A circular replay buffer for ``Dict`` observations whose every array is a tensor on ``device``.

    Same constructor, layout (``[buffer_size // n_envs, n_envs, ...]``), ``add`` / ``sample`` contract and timeout
    handling as SB3's ``DictReplayBuffer``: a transition that ended by the time limit is stored with ``done=1`` and
    ``timeout=1`` and sampled with ``done=0``, so DQN bootstraps through it. Sampling draws the indices with torch's
    generator on the device (SB3 uses numpy's): uniform over stored transitions, as SB3.

    Storage is ``torch.empty`` (only stored rows are ever sampled), so, like numpy's lazily zeroed pages in SB3's
    buffer, a large buffer costs no time to create and host memory only as it fills.

    Setting ``device`` (SB3's ``load_replay_buffer`` does) moves the storage there.

    :param handle_timeout_termination: treat time-limit ends as non-terminal (SB3's default).
    :param optimize_memory_usage: not supported (as in SB3's ``DictReplayBuffer``).
    """

    observations: dict[str, Tensor]  # type: ignore[assignment]
    next_observations: dict[str, Tensor]  # type: ignore[assignment]

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
    ):
        if not isinstance(observation_space, spaces.Dict):
            raise ValueError(f"DeviceDictReplayBuffer needs a Dict observation space; got {observation_space}")
        if optimize_memory_usage:
            raise ValueError("DeviceDictReplayBuffer does not support optimize_memory_usage (nor does SB3's DictReplayBuffer)")
        self._storage: list[str] = []
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.buffer_size = max(buffer_size // n_envs, 1)
        self.optimize_memory_usage = False
        self.handle_timeout_termination = handle_timeout_termination
        rows, device = (self.buffer_size, self.n_envs), self.device

        def observation_store() -> dict[str, Tensor]:
            return {
                key: torch.empty((*rows, *shape), dtype=torch_dtype(observation_space[key]), device=device)
                for key, shape in self.obs_shape.items()
            }

        self.observations = observation_store()
        self.next_observations = observation_store()
        action_dtype = torch.int64 if isinstance(action_space, (spaces.Discrete, spaces.MultiDiscrete)) else torch.float32
        self.actions = torch.empty((*rows, self.action_dim), dtype=action_dtype, device=device)  # type: ignore[assignment]
        self.rewards = torch.empty(rows, dtype=torch.float32, device=device)  # type: ignore[assignment]
        self.dones = torch.empty(rows, dtype=torch.float32, device=device)  # type: ignore[assignment]
        self.timeouts = torch.empty(rows, dtype=torch.float32, device=device)  # type: ignore[assignment]
        self._storage = ["observations", "next_observations", "actions", "rewards", "dones", "timeouts"]

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self._device

    @device.setter
    def device(self, device: torch.device | str) -> None:
        self._device = torch.device(device)
        for name in getattr(self, "_storage", []):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, {key: tensor.to(self._device) for key, tensor in value.items()})
            else:
                setattr(self, name, value.to(self._device))

    def add(  # type: ignore[override]
        self,
        obs: Mapping[str, Tensor | np.ndarray],
        next_obs: Mapping[str, Tensor | np.ndarray],
        action: Tensor | np.ndarray,
        reward: Tensor | np.ndarray,
        done: Tensor | np.ndarray,
        infos: Sequence[dict[str, Any]] | Tensor,
    ) -> None:
        """Write one step of every env.

        :param next_obs: the observation each transition led to (for a finished env, its final observation).
        :param infos: SB3's per-env info dicts (``TimeLimit.truncated`` read from each) or, from the fast agents,
            a bool ``[n_envs]`` tensor of time-limit truncations.
        """
        pos, device = self.pos, self.device
        for key in self.observations:
            shape = self.observations[key].shape[1:]
            self.observations[key][pos].copy_(as_tensor(obs[key], device).reshape(shape), non_blocking=True)
            self.next_observations[key][pos].copy_(as_tensor(next_obs[key], device).reshape(shape), non_blocking=True)
        self.actions[pos].copy_(as_tensor(action, device).reshape(self.n_envs, self.action_dim), non_blocking=True)
        self.rewards[pos].copy_(as_tensor(reward, device), non_blocking=True)
        self.dones[pos].copy_(as_tensor(done, device), non_blocking=True)
        if self.handle_timeout_termination:
            if not isinstance(infos, Tensor):
                infos = torch.tensor([bool(info.get("TimeLimit.truncated", False)) for info in infos])
            self.timeouts[pos].copy_(infos, non_blocking=True)
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True
            self.pos = 0

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> DictReplayBufferSamples:  # type: ignore[override]
        """``batch_size`` transitions drawn uniformly (with replacement) from those stored."""
        upper_bound = self.buffer_size if self.full else self.pos
        if upper_bound == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        batch_inds = torch.randint(0, upper_bound, (batch_size,), device=self.device)
        return self._get_samples(batch_inds, env=env)

    def _get_samples(self, batch_inds: Tensor | np.ndarray, env: VecNormalize | None = None) -> DictReplayBufferSamples:  # type: ignore[override]
        if env is not None:
            raise ValueError("DeviceDictReplayBuffer does not normalise observations (no VecNormalize)")
        batch_inds = as_tensor(batch_inds, self.device).to(self.device, torch.int64)
        env_indices = torch.randint(0, self.n_envs, batch_inds.shape, device=self.device)
        flat = batch_inds * self.n_envs + env_indices
        total = self.buffer_size * self.n_envs

        def take(tensor: Tensor) -> Tensor:  # [rows, n_envs, ...] viewed as [total, ...]; a view, no copy
            return tensor.reshape(total, *tensor.shape[2:]).index_select(0, flat)

        dones = take(self.dones)
        if self.handle_timeout_termination:
            dones = dones * (1.0 - take(self.timeouts))
        return DictReplayBufferSamples(
            observations={key: take(obs) for key, obs in self.observations.items()},
            actions=take(self.actions),
            next_observations={key: take(obs) for key, obs in self.next_observations.items()},
            dones=dones.reshape(-1, 1),
            rewards=take(self.rewards).reshape(-1, 1),
        )
