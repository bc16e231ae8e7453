"""Reference policies for every env: random, greedy (myopic heuristic on the info dict) and oracle.

They act on a batched env's tensors (``obs``, ``info`` from :meth:`BatchedEnv.step`), so a thousand
episodes take a few batched steps. ``greedy`` and ``oracle`` read what the env exposes in ``info``
and never the text: they bound what a learner should reach, they do not solve the task by reading.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from mmrl.core.batched_env import BatchedEnv, Info, Observation

POLICIES = ("random", "greedy", "oracle")


class ReferencePolicy(Protocol):
    """A policy over a batched env: ``act`` gets the latest observation and info, returns int64[B]."""

    def act(self, obs: Observation, info: Info) -> Tensor: ...

    def update(self, info: Info, done: Tensor) -> None:
        """Called after every step with the step's info and which rows finished."""


class RandomPolicy:
    """Uniform over the action space, from a seeded generator on the env's device."""

    def __init__(self, env: BatchedEnv, seed: int = 0):
        self.env = env
        self.generator = torch.Generator(device=env.device).manual_seed(seed)

    def act(self, obs: Observation, info: Info) -> Tensor:
        n = self.env.single_action_space.n
        return torch.randint(n, (self.env.num_envs,), generator=self.generator, device=self.env.device)

    def update(self, info: Info, done: Tensor) -> None:
        pass


class OraclePolicy:
    """Picks the action with the highest true expected reward (``info["expected_reward"]``)."""

    def __init__(self, env: BatchedEnv):
        self.env = env

    def act(self, obs: Observation, info: Info) -> Tensor:
        if "expected_reward" not in info:
            raise KeyError(f"the oracle needs info['expected_reward'], which {type(self.env).__name__} does not provide")
        return info["expected_reward"].argmax(dim=1)

    def update(self, info: Info, done: Tensor) -> None:
        pass


class RecommendGreedyPolicy:
    """A myopic content-based recommender: the item most like the last one clicked.

    Scores each slot's item (``info["item_ids"]``) by shared category (2), colour (1) and pattern (0.5)
    with the last clicked item, cheaper tiers first on ties; before any click it offers the cheapest.
    It never reads the shopper's words."""

    def __init__(self, env: BatchedEnv):
        catalog = env.catalog  # type: ignore[attr-defined]
        device = env.device
        self.attributes = torch.stack(
            [torch.as_tensor(a, device=device) for a in (catalog.category, catalog.colour, catalog.pattern)], dim=1
        )
        self.tier = torch.as_tensor(catalog.tier, device=device)
        self.weights = torch.tensor([2.0, 1.0, 0.5], device=device)
        self.last_clicked = torch.full((env.num_envs,), -1, dtype=torch.int64, device=device)

    def act(self, obs: Observation, info: Info) -> Tensor:
        items = info["item_ids"]
        known = self.last_clicked >= 0
        reference = self.attributes[self.last_clicked.clamp(min=0)]
        same = (self.attributes[items] == reference[:, None, :]).float() @ self.weights
        score = same * known[:, None] - 0.1 * self.tier[items]
        return score.argmax(dim=1)

    def update(self, info: Info, done: Tensor) -> None:
        self.last_clicked = torch.where(info["clicked"], info["chosen_item"], self.last_clicked)
        self.last_clicked = torch.where(done, -1, self.last_clicked)


class NavigateGreedyPolicy:
    """Navigate, myopic: steps to a free cell closer to the target (no path search), then faces it and
    says done / picks it up (:func:`mmrl.envs.navigate.plan_greedy` on the true positions in ``info``)."""

    def __init__(self, env: BatchedEnv):
        self.grid_size = env.params.grid_size  # type: ignore[attr-defined]

    def act(self, obs: Observation, info: Info) -> Tensor:
        from mmrl.envs.navigate import plan_greedy

        return plan_greedy(info, self.grid_size)

    def update(self, info: Info, done: Tensor) -> None:
        pass


class NavigateOraclePolicy(NavigateGreedyPolicy):
    """Navigate, oracle: a shortest path (BFS on the true state in ``info``) to the target, then the
    mission's verb (:func:`mmrl.envs.navigate.plan_shortest_path`)."""

    def act(self, obs: Observation, info: Info) -> Tensor:
        from mmrl.envs.navigate import plan_shortest_path

        return plan_shortest_path(info, self.grid_size)


class DiagnoseScriptedPolicy:
    """Diagnose, scripted: orders the detailed scan while the lesion's shape is unknown, then the blood
    count and the temperature chart while no condition has posterior ``>= confidence``, then diagnoses
    the most probable condition. It reads ``info["posterior"]`` (what a perfect reader of image and text
    knows), never the hidden condition."""

    def __init__(self, env: BatchedEnv, confidence: float = 0.9):
        from mmrl.envs.diagnose import NUM_TESTS, Exam

        self.tests, self.scan, self.blood, self.temperature = NUM_TESTS, Exam.SCAN, Exam.BLOOD, Exam.TEMPERATURE
        self.num_findings = env.params.num_findings  # type: ignore[attr-defined]
        self.confidence = confidence

    def act(self, obs: Observation, info: Info) -> Tensor:
        posterior, revealed = info["posterior"], info["revealed"]
        finding_known = posterior.view(-1, self.num_findings, 2).sum(dim=2).amax(dim=1) > 0.999
        best, condition = posterior.max(dim=1)
        unsure = best < self.confidence
        diagnose = condition + self.tests
        action = torch.where(unsure & ~revealed[:, self.temperature], int(self.temperature), diagnose)
        action = torch.where(unsure & ~revealed[:, self.blood], int(self.blood), action)
        return torch.where(~finding_known & ~revealed[:, self.scan], int(self.scan), action)

    def update(self, info: Info, done: Tensor) -> None:
        pass


class DiagnoseOraclePolicy:
    """Diagnose, oracle: diagnoses the true condition (``info["condition"]``) at once, ordering no test."""

    def __init__(self, env: BatchedEnv):
        from mmrl.envs.diagnose import NUM_TESTS

        self.tests = NUM_TESTS

    def act(self, obs: Observation, info: Info) -> Tensor:
        return info["condition"] + self.tests

    def update(self, info: Info, done: Tensor) -> None:
        pass


def make_reference_policy(name: str, env: BatchedEnv, seed: int = 0) -> ReferencePolicy:
    """``random``, ``greedy`` or ``oracle`` for ``env``."""
    if name == "random":
        return RandomPolicy(env, seed)
    if name == "oracle":
        oracle = {"Navigate": NavigateOraclePolicy, "Diagnose": DiagnoseOraclePolicy}.get(type(env).__name__, OraclePolicy)
        return oracle(env)
    if name == "greedy":
        greedy = {
            "Recommend": RecommendGreedyPolicy,
            "Navigate": NavigateGreedyPolicy,
            "Diagnose": DiagnoseScriptedPolicy,
        }.get(type(env).__name__)
        if greedy is None:
            raise ValueError(f"no greedy policy for {type(env).__name__}")
        return greedy(env)
    raise ValueError(f"unknown reference policy {name!r}; choose one of {list(POLICIES)}")
