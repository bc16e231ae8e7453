"""What the device-resident agents need from an env: an mmrl tensor VecEnv, and its finished episodes kept on its device.

The fast agents (:mod:`mmrl.agents.fast`) step the raw :class:`~mmrl.core.batched_env.BatchedEnv` behind
``mmrl.make_vec(..., as_tensors=True)`` directly: its ``step`` hands back batch tensors (``done_index``,
``final_observation``, ``episode_return`` ...) instead of ``num_envs`` Python info dicts, so a step costs no
per-row Python loop and no host copy.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
from gymnasium import spaces
from torch import Tensor

from mmrl.core.adapters import SB3VecEnv
from mmrl.core.batched_env import BatchedEnv, Info, Observation


def tensor_batched_env(env: Any, algorithm: str = "this agent") -> BatchedEnv:
    """The batched env behind an mmrl tensor VecEnv.

    :param env: what the algorithm was given (after SB3's own wrapping).
    :param algorithm: the agent's name, for the error message.
    :raises TypeError: when ``env`` is not ``mmrl.make_vec(..., as_tensors=True)`` (a numpy VecEnv, a wrapper such as
        ``VecNormalize``/``VecMonitor``, or a Gymnasium env).
    """
    if not (isinstance(env, SB3VecEnv) and env.as_tensors):
        detail = "a numpy mmrl VecEnv (as_tensors=False)" if isinstance(env, SB3VecEnv) else type(env).__name__
        raise TypeError(
            f"{algorithm} keeps its buffers on the device and needs an mmrl tensor VecEnv, unwrapped: "
            f"use mmrl.make_vec(env_id, num_envs, device=..., as_tensors=True); got {detail}. "
            "(Stock SB3 PPO/DQN take the numpy VecEnv.)"
        )
    if not isinstance(env.action_space, spaces.Discrete):
        raise TypeError(f"{algorithm} supports Discrete action spaces only; got {env.action_space}")
    return env.batched_env


def to_device(obs: Observation, device: torch.device) -> Observation:
    """Observation tensors on ``device`` (no copy when they are already there)."""
    return {key: value.to(device, non_blocking=True) for key, value in obs.items()}


class FinishedEpisodes:
    """Returns and lengths of finished episodes, gathered on the device and handed to SB3's ``ep_info_buffer`` in one
    host copy (``flush``) instead of one Python dict per finished env per step.

    :param maxlen: how many recent episodes matter (SB3's ``stats_window_size``); older ones are dropped on the device.
    """

    def __init__(self, maxlen: int = 100):
        self.maxlen = maxlen
        self._returns: list[Tensor] = []
        self._lengths: list[Tensor] = []
        self._pending = 0

    def record(self, info: Info) -> int:
        """Keep the finished rows of one batched ``step``'s info; return how many episodes finished."""
        done_index = info["done_index"]
        count = int(done_index.numel())  # a shape: known on the host without a device sync
        if count:
            self._returns.append(info["episode_return"].index_select(0, done_index))
            self._lengths.append(info["episode_length"].index_select(0, done_index))
            self._pending += count
            if len(self._returns) > 64:  # bound the list; keep only what the window can show
                self._returns = [torch.cat(self._returns)[-self.maxlen :]]
                self._lengths = [torch.cat(self._lengths)[-self.maxlen :]]
        return count

    def flush(self, ep_info_buffer: deque | None) -> None:
        """Append the pending episodes to ``ep_info_buffer`` as SB3's Monitor writes them (``{"r": .., "l": ..}``)."""
        if not self._returns or ep_info_buffer is None:
            return
        returns = torch.cat(self._returns)[-self.maxlen :].cpu().tolist()
        lengths = torch.cat(self._lengths)[-self.maxlen :].cpu().tolist()
        ep_info_buffer.extend({"r": float(r), "l": int(length)} for r, length in zip(returns, lengths, strict=True))
        self._returns, self._lengths, self._pending = [], [], 0
