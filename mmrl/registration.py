"""Environment ids, their Gymnasium registration, and :func:`make_vec` (the SB3 face).

Every env id is registered here once, on ``import mmrl``, with both an ``entry_point`` (a single
Gymnasium env) and a ``vector_entry_point`` (a native batched Gymnasium VectorEnv).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import torch

from mmrl.core.adapters import GymVectorEnv, SB3VecEnv, SingleEnv
from mmrl.core.batched_env import BatchedEnv

#: env id -> "module:BatchedEnvClass"
ENV_CLASSES: dict[str, str] = {
    "mmrl/Recommend-v0": "mmrl.envs.recommend:Recommend",
    "mmrl/Navigate-v0": "mmrl.envs.navigate:Navigate",
    "mmrl/Diagnose-v0": "mmrl.envs.diagnose:Diagnose",
}


def _load(path: str) -> type[BatchedEnv]:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def env_class(env_id: str) -> type[BatchedEnv]:
    """The batched env class registered under ``env_id``."""
    if env_id not in ENV_CLASSES:
        raise gym.error.NameNotFound(f"unknown mmrl env id {env_id!r}; registered: {sorted(ENV_CLASSES)}")
    return _load(ENV_CLASSES[env_id])


def _maybe_compile(env: BatchedEnv, compile: bool) -> BatchedEnv:
    if not isinstance(compile, bool):
        raise TypeError(f"compile must be True or False; got {compile!r}")
    return env.compile() if compile else env


def make_single_env(env_class: str, render_mode: str | None = None, **params: Any) -> SingleEnv:
    """Gymnasium ``entry_point``: one instance on the CPU."""
    return SingleEnv(_load(env_class)(num_envs=1, device="cpu", **params), render_mode=render_mode)


def make_gym_vector_env(
    env_class: str,
    num_envs: int = 1,
    device: str = "cpu",
    render_mode: str | None = None,
    compile: bool = False,
    **params: Any,
) -> GymVectorEnv:
    """Gymnasium ``vector_entry_point``: ``num_envs`` instances as one batched env (``compile``: see
    :func:`make_batched`)."""
    env = _load(env_class)(num_envs=num_envs, device=device, **params)
    return GymVectorEnv(_maybe_compile(env, compile), render_mode=render_mode)


def make_batched(
    env_id: str, num_envs: int = 1, device: str | torch.device = "cpu", compile: bool = False, **params: Any
) -> BatchedEnv:
    """The raw batched env (tensors in and out), e.g. for evaluation or device-resident agents.

    :param compile: fuse the env's step and reset with ``torch.compile`` (:meth:`BatchedEnv.compile`):
        faster steps for many instances, after a compilation of tens of seconds.
    """
    return _maybe_compile(env_class(env_id)(num_envs=num_envs, device=device, **params), compile)


def make_vec(
    env_id: str,
    num_envs: int = 1,
    device: str | torch.device = "cpu",
    seed: int | None = None,
    as_tensors: bool = False,
    info_keys: Sequence[str] = (),
    compile: bool = False,
    **params: Any,
) -> SB3VecEnv:
    """A Stable-Baselines3 ``VecEnv`` of ``num_envs`` instances simulated as one batch on ``device``.

    :param seed: seeds instance ``i`` with ``seed + i`` at the next ``reset()``.
    :param as_tensors: return torch tensors on ``device`` instead of numpy arrays.
    :param info_keys: env info entries to copy into each instance's info dict.
    :param compile: fuse the env's step and reset with ``torch.compile`` (see :func:`make_batched`).
    :param params: the env's options (e.g. ``slate_size=6`` for Recommend).
    """
    venv = SB3VecEnv(make_batched(env_id, num_envs, device, compile, **params), as_tensors=as_tensors, info_keys=info_keys)
    if seed is not None:
        venv.seed(seed)
    return venv


def register_envs() -> None:
    """Register every mmrl env id with Gymnasium (idempotent)."""
    for env_id, path in ENV_CLASSES.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="mmrl.registration:make_single_env",
            vector_entry_point="mmrl.registration:make_gym_vector_env",
            kwargs={"env_class": path},
        )
