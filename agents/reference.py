"""Reference policies by name, for any env: ``random``, ``oracle`` and whatever the env itself offers.

Generic code (evaluation, the training summary, reports) asks for a policy by name; this module builds the
generic ones and otherwise asks the env (:meth:`~mmrl.core.batched_env.BatchedEnv.reference_policies`), where
each task keeps its scripted, myopic and planning policies beside its transition. They act on a batched env's
tensors, so a thousand episodes take a few batched steps; policies other than ``random`` read the true state the
env exposes in ``info`` and never the text: they bound what a learner should reach.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmrl.core.batched_env import BatchedEnv, Info, Observation
from mmrl.core.planner import RolloutPlanner
from mmrl.core.policy import ReferencePolicy

#: the names every built-in env answers to (an env may offer more, e.g. ``planner``, the upper bound, where the
#: task is sequential enough to need one)
POLICIES = ("random", "greedy", "oracle")
#: names of the policy that takes the best expected reward now (``oracle`` is the older name)
MYOPIC = ("myopic", "oracle")


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


class ArgmaxPolicy:
    """Picks the action with the highest value in ``info[key]`` (float[B, A]): with the env's declared
    ``value_key`` (the true expected reward of each action now), the myopic optimum."""

    def __init__(self, key: str):
        self.key = key

    def act(self, obs: Observation, info: Info) -> Tensor:
        return info[self.key].argmax(dim=1)

    def update(self, info: Info, done: Tensor) -> None:
        pass


class UnknownPolicyError(ValueError, KeyError):
    """The env offers no reference policy of that name (a ``ValueError``, and a ``KeyError`` for lookups)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def policy_names(env: BatchedEnv) -> list[str]:
    """The reference policies ``env`` offers."""
    generic = ["random"] + (["myopic", "oracle"] if env.value_key is not None else [])
    return list(dict.fromkeys([*generic, *env.reference_policies()]))


def make_reference_policy(name: str, env: BatchedEnv, seed: int = 0) -> ReferencePolicy:
    """The reference policy ``name`` for ``env`` (see :func:`policy_names`).

    :raises UnknownPolicyError: naming the policies the env offers."""
    own = env.reference_policies()
    if name in own:
        return own[name](seed)
    if name == "random":
        return RandomPolicy(env, seed)
    if name in MYOPIC and env.value_key is not None:
        return ArgmaxPolicy(env.value_key)
    raise UnknownPolicyError(f"{type(env).__name__} has no reference policy {name!r}; it offers {policy_names(env)}")


__all__ = [
    "MYOPIC", "POLICIES", "ArgmaxPolicy", "RandomPolicy", "RolloutPlanner", "UnknownPolicyError", "make_reference_policy",
    "policy_names",
]
