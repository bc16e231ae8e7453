"""Environment ids, their Gymnasium registration, and :func:`make_vec` (the SB3 face).

Every env id is registered here once, on ``import mmrl``, with both an ``entry_point`` (a single
Gymnasium env) and a ``vector_entry_point`` (a native batched Gymnasium VectorEnv). An env of your own
(a :class:`~mmrl.core.batched_env.BatchedEnv` subclass) joins with one call, ``register_env(id, cls)``:
every face, the reference policies and the evaluation tools then work with it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import torch
from gymnasium.vector import AutoresetMode

from mmrl.core.adapters import GymVectorEnv, SB3VecEnv, SingleEnv
from mmrl.core.batched_env import BatchedEnv
from mmrl.envs.diagnose import Diagnose
from mmrl.envs.navigate import Navigate
from mmrl.envs.recommend import Recommend
from mmrl.envs.tutor import Tutor

#: env id -> its batched env class (:func:`register_env` adds to it)
ENV_CLASSES: dict[str, type[BatchedEnv]] = {}
_BUILT_IN = {"mmrl/Recommend-v0": Recommend, "mmrl/Navigate-v0": Navigate, "mmrl/Diagnose-v0": Diagnose,
             "mmrl/Tutor-v0": Tutor}


def env_class(env_id: str) -> type[BatchedEnv]:
    """The batched env class registered under ``env_id``."""
    if env_id not in ENV_CLASSES:
        raise gym.error.NameNotFound(f"unknown mmrl env id {env_id!r}; registered: {sorted(ENV_CLASSES)}")
    return ENV_CLASSES[env_id]


def _maybe_compile(env: BatchedEnv, compile: bool) -> BatchedEnv:
    if not isinstance(compile, bool):
        raise TypeError(f"compile must be True or False; got {compile!r}")
    return env.compile() if compile else env


def make_single_env(env_class: type[BatchedEnv], render_mode: str | None = None, **params: Any) -> SingleEnv:
    """Gymnasium ``entry_point``: one instance on the CPU."""
    return SingleEnv(env_class(num_envs=1, device="cpu", **params), render_mode=render_mode)


def make_gym_vector_env(
    env_class: type[BatchedEnv],
    num_envs: int = 1,
    device: str = "cpu",
    render_mode: str | None = None,
    compile: bool = False,
    autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
    **params: Any,
) -> GymVectorEnv:
    """Gymnasium ``vector_entry_point``: ``num_envs`` instances as one batched env (``compile``: see
    :func:`make_batched`; ``autoreset_mode``: ``SAME_STEP`` or ``DISABLED``, see :class:`GymVectorEnv`)."""
    env = env_class(num_envs=num_envs, device=device, **params)
    return GymVectorEnv(_maybe_compile(env, compile), render_mode=render_mode, autoreset_mode=autoreset_mode)


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
    if not isinstance(as_tensors, bool):
        raise TypeError(f"as_tensors must be True or False; got {as_tensors!r}")
    venv = SB3VecEnv(make_batched(env_id, num_envs, device, compile, **params), as_tensors=as_tensors, info_keys=info_keys)
    if seed is not None:
        venv.seed(seed)
    return venv


def register_env(env_id: str, cls: type[BatchedEnv]) -> None:
    """Register the batched env class ``cls`` as ``env_id`` with mmrl (:func:`make_batched`, :func:`make_vec`)
    and with Gymnasium (``gym.make``, ``gym.make_vec``). Registering the same class again does nothing.

    :raises TypeError: ``cls`` is not a :class:`BatchedEnv` subclass.
    :raises ValueError: ``env_id`` is taken by another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, BatchedEnv)):
        raise TypeError(f"register_env needs a BatchedEnv subclass; got {cls!r}")
    known = ENV_CLASSES.get(env_id)
    if known is not None and known is not cls:
        raise ValueError(f"env id {env_id!r} is already registered to {known.__module__}.{known.__qualname__}")
    ENV_CLASSES[env_id] = cls
    if env_id not in gym.registry:
        gym.register(
            id=env_id,
            entry_point=functools.partial(make_single_env, cls),
            vector_entry_point=functools.partial(make_gym_vector_env, cls),
        )


def register_envs() -> None:
    """Register mmrl's own envs (idempotent; ``import mmrl`` does it)."""
    for env_id, cls in _BUILT_IN.items():
        register_env(env_id, cls)
