"""The reference-policy contract: how scripted, myopic and planning policies act on a batched env."""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor


class ReferencePolicy(Protocol):
    """A policy over a batched env's tensors: ``act`` gets the latest observation and info of every row
    (:meth:`mmrl.core.batched_env.BatchedEnv.step`) and returns int64[B] actions on the env's device."""

    def act(self, obs: dict[str, Tensor], info: dict[str, Any]) -> Tensor: ...

    def update(self, info: dict[str, Any], done: Tensor) -> None:
        """Called after every step with the step's info and which rows finished (bool[B])."""
