"""Stable-Baselines3 algorithms built from plain arguments (the training entry point turns its config into these).

``build_algorithm("ppo", env, extractor_kwargs={"fusion": "film"}, algo_kwargs={"n_steps": 64}, seed=0, device="cpu")``
gives a ``PPO("MultiInputPolicy", env, ...)`` whose policy uses :class:`mmrl.MultimodalExtractor`. Names map to
classes in :data:`ALGORITHMS`; ``recurrent_ppo`` comes from sb3-contrib, imported only when asked for.
``device_resident=True`` picks the variant of :data:`DEVICE_RESIDENT` instead (FastPPO, FastDQN): the same
algorithm with its buffers on the device, trained on ``mmrl.make_vec(..., as_tensors=True)``.
Hyper-parameters are checked against the constructor's signature first, so a misspelt one fails with the list
of valid names before any env or network is built.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from mmrl.extractors.multimodal import MultimodalExtractor

#: checks of the common numeric hyper-parameters (a schedule given as a string is left to SB3): key -> (test, meaning)
HYPERPARAMETER_RANGES: dict[str, tuple[Any, str]] = {
    "learning_rate": (lambda v: v > 0, "> 0"),
    "gamma": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "gae_lambda": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "clip_range": (lambda v: v > 0, "> 0"),
    "ent_coef": (lambda v: v >= 0, ">= 0"),
    "vf_coef": (lambda v: v >= 0, ">= 0"),
    "max_grad_norm": (lambda v: v > 0, "> 0"),
    "n_steps": (lambda v: v >= 1, ">= 1"),
    "batch_size": (lambda v: v >= 1, ">= 1"),
    "n_epochs": (lambda v: v >= 1, ">= 1"),
    "buffer_size": (lambda v: v >= 1, ">= 1"),
    "learning_starts": (lambda v: v >= 0, ">= 0"),
    "train_freq": (lambda v: v >= 1, ">= 1"),
    "gradient_steps": (lambda v: v != 0, "a positive number of steps, or -1 (as many as env steps)"),
    "target_update_interval": (lambda v: v >= 1, ">= 1"),
    "tau": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "exploration_fraction": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "exploration_initial_eps": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "exploration_final_eps": (lambda v: 0 <= v <= 1, "in [0, 1]"),
}

#: algorithm name -> (module, class, policy, pip package that provides it)
ALGORITHMS: dict[str, tuple[str, str, str, str]] = {
    "ppo": ("stable_baselines3", "PPO", "MultiInputPolicy", "stable-baselines3"),
    "a2c": ("stable_baselines3", "A2C", "MultiInputPolicy", "stable-baselines3"),
    "dqn": ("stable_baselines3", "DQN", "MultiInputPolicy", "stable-baselines3"),
    "recurrent_ppo": ("sb3_contrib", "RecurrentPPO", "MultiInputLstmPolicy", "sb3-contrib"),
}
#: algorithm name -> (module, class) of its device-resident variant (``algo.device_resident=true``)
DEVICE_RESIDENT: dict[str, tuple[str, str]] = {
    "ppo": ("mmrl.agents.fast", "FastPPO"),
    "dqn": ("mmrl.agents.fast", "FastDQN"),
}

#: hyper-parameters that take RL Zoo's linear schedule ``"lin_<start>"`` (from ``start`` down to 0 over the run)
SCHEDULED = ("learning_rate", "clip_range", "clip_range_vf")


def with_schedules(algo_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``algo_kwargs`` with each ``"lin_<start>"`` of :data:`SCHEDULED` turned into SB3's linear schedule from
    ``start`` to 0 (as RL Zoo's hyperparameter files write it, e.g. ``learning_rate: lin_2e-3``).

    :raises ValueError: on a schedule string that is not ``lin_`` and a positive number."""
    out = dict(algo_kwargs)
    for key in SCHEDULED:
        value = out.get(key)
        if not isinstance(value, str):
            continue
        start = None
        if value.startswith("lin_"):
            try:
                start = float(value[4:])
            except ValueError:
                pass
        if start is None or not start > 0:
            raise ValueError(f"{key}={value!r}: expected a positive number or a linear schedule 'lin_<start>' (e.g. 'lin_2e-3')")
        out[key] = LinearSchedule(start, 0.0, 1.0)
    return out


#: constructor arguments set by :func:`build_algorithm` itself, not accepted among the hyper-parameters
RESERVED = ("policy", "env", "seed", "device", "policy_kwargs", "tensorboard_log", "verbose", "_init_setup_model")

#: names accepted for ``policy_kwargs["activation_fn"]`` (a config holds strings, SB3 wants a class)
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU,
}  # fmt: skip


def algorithm_class(name: str, device_resident: bool = False) -> type[BaseAlgorithm]:
    """The SB3 class for ``name`` (``ppo``, ``a2c``, ``dqn``, ``recurrent_ppo``), or its device-resident variant.

    :raises ValueError: for an unknown name (the message lists the valid ones), or ``device_resident`` for an
        algorithm without such a variant.
    :raises ImportError: when the package providing it (sb3-contrib for ``recurrent_ppo``) is not installed.
    """
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; valid choices: {sorted(ALGORITHMS)}")
    module, cls, _, package = ALGORITHMS[name]
    if device_resident:
        if name not in DEVICE_RESIDENT:
            raise ValueError(
                f"algo.device_resident=true: {name!r} has no device-resident variant; it exists for {sorted(DEVICE_RESIDENT)}"
            )
        module, cls = DEVICE_RESIDENT[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as error:
        raise ImportError(
            f"algorithm {name!r} needs the package {package!r}, which is not installed: pip install {package}"
        ) from error


def is_off_policy(name: str) -> bool:
    """Whether the algorithm keeps a replay buffer (saved with checkpoints)."""
    return issubclass(algorithm_class(name), OffPolicyAlgorithm)


def check_algo_kwargs(name: str, algo_kwargs: Mapping[str, Any], device_resident: bool = False) -> None:
    """Fail fast on a hyper-parameter the constructor of ``name`` does not take.

    :raises ValueError: naming the bad keys and listing the valid ones.
    """
    cls = algorithm_class(name, device_resident)
    valid = sorted(p for p in inspect.signature(cls.__init__).parameters if p not in ("self", *RESERVED))
    reserved = sorted(k for k in algo_kwargs if k in RESERVED)
    if reserved:
        raise ValueError(f"{reserved} are set by mmrl from the config, not in the algorithm's hyper-parameters")
    unknown = sorted(k for k in algo_kwargs if k not in valid)
    if unknown:
        raise ValueError(f"{cls.__name__} does not take the hyper-parameters {unknown}; valid choices: {valid}")
    for key, value in algo_kwargs.items():
        if key in SCHEDULED and isinstance(value, str):
            with_schedules({key: value})  # raises on a malformed schedule
        rule = HYPERPARAMETER_RANGES.get(key)
        if rule is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and not rule[0](value):
            raise ValueError(f"{cls.__name__} hyper-parameter {key}={value!r}: must be {rule[1]}")


def policy_kwargs_for(extractor_kwargs: Mapping[str, Any], policy_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``policy_kwargs`` with :class:`~mmrl.MultimodalExtractor` and its arguments; activation names become classes."""
    kwargs = dict(policy_kwargs or {})
    activation = kwargs.get("activation_fn")
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation_fn {activation!r}; valid choices: {sorted(ACTIVATIONS)}")
        kwargs["activation_fn"] = ACTIVATIONS[activation]
    kwargs["features_extractor_class"] = MultimodalExtractor
    kwargs["features_extractor_kwargs"] = dict(extractor_kwargs)
    return kwargs


def build_algorithm(
    algo_name: str,
    env: VecEnv,
    extractor_kwargs: Mapping[str, Any],
    algo_kwargs: Mapping[str, Any],
    seed: int | None,
    device: str | torch.device,
    policy_kwargs: Mapping[str, Any] | None = None,
    verbose: int = 0,
    device_resident: bool = False,
) -> BaseAlgorithm:
    """A new SB3 model for ``env`` whose policy reads observations through :class:`~mmrl.MultimodalExtractor`.

    :param algo_name: a key of :data:`ALGORITHMS`.
    :param env: a VecEnv; with ``device_resident``, ``mmrl.make_vec(..., as_tensors=True)``.
    :param extractor_kwargs: keyword arguments of :class:`~mmrl.MultimodalExtractor` (``fusion``, ``features_dim`` ...).
    :param algo_kwargs: the constructor's hyper-parameters (``n_steps``, ``learning_rate`` ...).
    :param policy_kwargs: other policy arguments (``net_arch``, ``activation_fn`` by name ...).
    :param device_resident: build the variant of :data:`DEVICE_RESIDENT` (buffers on the device).
    """
    check_algo_kwargs(algo_name, algo_kwargs, device_resident)
    cls = algorithm_class(algo_name, device_resident)
    policy = ALGORITHMS[algo_name][2]
    return cls(
        policy, env, seed=seed, device=device, verbose=verbose,
        policy_kwargs=policy_kwargs_for(extractor_kwargs, policy_kwargs), **with_schedules(algo_kwargs),
    )  # fmt: skip


def load_algorithm(
    algo_name: str, path: str | Path, env: VecEnv | None, device: str | torch.device, device_resident: bool = False
) -> BaseAlgorithm:
    """A model saved by ``model.save`` (``.zip``), attached to ``env``."""
    return algorithm_class(algo_name, device_resident).load(path, env=env, device=device)
