"""Run whole episodes of a policy on a batched env and collect their returns and lengths."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from mmrl.core.batched_env import BatchedEnv, Info, Observation

ActFn = Callable[[Observation, Info], Tensor]
UpdateFn = Callable[[Info, Tensor], None]


@dataclass
class EpisodeStats:
    """Per-episode results, one entry per episode (row ``i`` of the batch is episode ``i``)."""

    returns: np.ndarray
    lengths: np.ndarray
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-episode sums of the float/bool per-row info entries named in ``sum_keys``."""

    @property
    def mean_return(self) -> float:
        return float(self.returns.mean())


def run_episodes(
    env: BatchedEnv,
    act: ActFn,
    seed: int,
    update: UpdateFn | None = None,
    sum_keys: tuple[str, ...] = (),
) -> EpisodeStats:
    """One episode in each of the env's ``num_envs`` rows, seeded ``seed + i``; rows that finish wait.

    :param act: ``(obs, info) -> actions int64[B]``.
    :param update: called after each step with ``(info, done)``.
    :param sum_keys: info entries (per row, per step) to add up over each episode.
    """
    obs, info = env.reset(seed=seed)
    n = env.num_envs
    finished = torch.zeros(n, dtype=torch.bool, device=env.device)
    returns = torch.zeros(n, dtype=torch.float32, device=env.device)
    lengths = torch.zeros(n, dtype=torch.int64, device=env.device)
    sums = {k: torch.zeros(n, dtype=torch.float64, device=env.device) for k in sum_keys}
    for _ in range(env.max_episode_steps):
        actions = act(obs, info)
        obs, reward, terminated, truncated, info = env.step(actions)
        done = terminated | truncated
        live = ~finished
        for k in sum_keys:
            sums[k] += torch.where(live, info[k].to(torch.float64), 0.0)
        newly = done & live
        returns = torch.where(newly, info["episode_return"], returns)
        lengths = torch.where(newly, info["episode_length"], lengths)
        finished |= done
        if update is not None:
            update(info, done)
        if bool(finished.all()):
            break
    return EpisodeStats(returns.cpu().numpy(), lengths.cpu().numpy(), {k: v.cpu().numpy() for k, v in sums.items()})
