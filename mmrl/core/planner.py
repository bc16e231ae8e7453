"""Planning on a batched env's true state: Monte-Carlo rollouts of copied rows through the env's pure transition.

Works for any :class:`~mmrl.core.batched_env.BatchedEnv`, since its ``_transition`` is a pure function of the state,
the actions and a random key: copies of a row can be stepped without touching the env itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from mmrl.core import rng
from mmrl.core.batched_env import BatchedEnv, Info, Observation, select_rows


class RolloutPlanner:
    """An upper-bound reference: Monte-Carlo lookahead on the env's true state (one step of policy improvement
    over a base policy).

    At each decision, every row's state is copied ``rollouts`` times per candidate action; each copy takes its
    action, then follows the base policy (``base(info)``, info being the env's ``_decision_info`` of the copy;
    default: the myopic argmax of the env's ``value_key``) through the env's own pure transition for up to
    ``horizon`` steps or until its episode ends; an action replaces the base policy's where its copies beat the
    base action's clearly (:meth:`act`). Copies of one row share their random numbers across actions (common random numbers), so the
    comparison between actions is not drowned in the noise of the draws; the draws are fresh, not the env's
    own future, so the planner does not peek at what will happen. It reads the env's state (``env.state``), so
    it must act on the env it was made for.

    Cost per decision: ``num_actions * rollouts * horizon`` transitions per row, computed ``max_copies`` copies
    at a time (Recommend's long-term setting, 8 slots, 8 rollouts, 40 steps: about 2,500 transitions per row and
    decision; BENCHMARKS.md has the wall time of 2,000 episodes).

    :param base: the policy the copies follow after their first action, on the decision info alone.
    :param rollouts: copies per (row, action).
    :param horizon: steps simulated per copy (``None``: to the step limit).
    :param max_copies: copies simulated at once (bounds memory).
    :param confidence: standard errors by which an action must beat the base policy's to replace it.
    """

    SALT = 0x5EED_0F_A1

    def __init__(
        self,
        env: BatchedEnv,
        base: Callable[[Info], Tensor] | None = None,
        rollouts: int = 8,
        horizon: int | None = None,
        max_copies: int = 1 << 16,
        confidence: float = 2.0,
    ):
        if base is None and env.value_key is None:
            raise ValueError(f"{type(env).__name__} declares no value_key: give the planner a base policy")
        if rollouts < 1 or (horizon is not None and horizon < 1) or max_copies < 1:
            raise ValueError(f"rollouts, horizon and max_copies must be >= 1; got {rollouts}, {horizon}, {max_copies}")
        self.env, self.rollouts, self.horizon, self.max_copies, self.confidence = env, rollouts, horizon, max_copies, confidence
        key = env.value_key
        self.base = base if base is not None else (lambda info: info[key].argmax(dim=1))

    def action_values(self, rows: Tensor | None = None) -> Tensor:
        """float32[R, A]: the Monte-Carlo estimate of each action's return from the current state of ``rows``
        (default: every row)."""
        return self.rollout_returns(rows).mean(dim=2)

    def rollout_returns(self, rows: Tensor | None = None) -> Tensor:
        """float32[R, A, rollouts]: the return of every copy (copy ``m`` of every action shares its draws)."""
        env = self.env
        if env.state is None:
            raise RuntimeError("the planner needs an env that has been reset")
        rows = torch.arange(env.num_envs, device=env.device) if rows is None else rows
        actions, m = env.single_action_space.n, self.rollouts
        per_row = actions * m
        chunk = max(1, self.max_copies // per_row)
        if not len(rows):
            return torch.zeros(0, actions, m, device=env.device)
        return torch.cat([self._returns(rows[i : i + chunk]) for i in range(0, len(rows), chunk)])

    def _returns(self, rows: Tensor) -> Tensor:
        env, m = self.env, self.rollouts
        n = env.single_action_space.n
        copies = rows.repeat_interleave(n * m)
        first = torch.arange(n, device=env.device).repeat_interleave(m).repeat(len(rows))
        copy_id = torch.arange(m, device=env.device).repeat(len(rows) * n)
        key = rng.hash32(env._episode_key.index_select(0, copies) ^ rng.hash32((copy_id + self.SALT) & rng.MASK32))
        state = select_rows(env.state, copies)
        total = torch.zeros(len(copies), dtype=torch.float32, device=env.device)
        alive = torch.ones(len(copies), dtype=torch.bool, device=env.device)
        horizon = env.max_episode_steps if self.horizon is None else self.horizon
        actions = first
        for step in range(horizon):
            if step:
                actions = self.base(type(env)._decision_info(env, state))
            elapsed = state.elapsed
            state, reward, terminated, _ = env._transition(state, actions, rng.step_key(key, elapsed))
            state = dataclasses.replace(state, elapsed=elapsed + 1)
            total += torch.where(alive, reward, 0.0)
            alive &= ~terminated & (state.elapsed < env.max_episode_steps)
            if not bool(alive.any()):
                break
        return total.view(len(rows), n, m)

    def act(self, obs: Observation, info: Info) -> Tensor:
        """The base policy's action, unless another action's rollouts beat it clearly: by more than
        ``confidence`` standard errors of the paired differences (the copies share their draws), so noise alone
        rarely makes the planner worse than its base."""
        returns = self.rollout_returns()
        base = self.base(info)
        gain = returns - returns.gather(1, base[:, None, None].expand(-1, 1, returns.shape[2]))
        mean = gain.mean(dim=2)
        error = gain.std(dim=2) / self.rollouts**0.5 if self.rollouts > 1 else torch.zeros_like(mean)
        clear = mean - self.confidence * error
        best = clear.argmax(dim=1)
        return torch.where(clear.gather(1, best[:, None]).squeeze(1) > 0, best, base)

    def update(self, info: Info, done: Tensor) -> None:
        pass
