"""The engine's contract (:mod:`mmrl.testing`) on every registered env, plus engine-level errors and CUDA."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import pytest
import torch

import mmrl
from mmrl.testing import CONTRACT_CHECKS, Options, check_observation_fields, scripted_actions


@pytest.mark.parametrize("check", CONTRACT_CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
def test_contract(env_id: str, check: Callable[[str, Options], None]) -> None:
    check(env_id, {})


def test_egocentric_view_observes_from_its_declared_fields() -> None:
    check_observation_fields("mmrl/Navigate-v0", {"view": "egocentric"})


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="num_envs must be a positive integer; got 0"):
        mmrl.make_batched("mmrl/Recommend-v0", num_envs=0)
    with pytest.raises(gym.error.NameNotFound, match="registered"):
        mmrl.make_vec("mmrl/Nope-v0", num_envs=2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            mmrl.make_batched("mmrl/Recommend-v0", num_envs=2, device="cuda")


def test_register_env_refuses_what_is_not_a_batched_env_or_a_taken_id() -> None:
    with pytest.raises(TypeError, match="needs a BatchedEnv subclass"):
        mmrl.register_env("mmrl-test/Nope-v0", dict)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already registered"):
        mmrl.register_env("mmrl/Recommend-v0", mmrl.ENV_CLASSES["mmrl/Navigate-v0"])
    mmrl.register_env("mmrl/Recommend-v0", mmrl.ENV_CLASSES["mmrl/Recommend-v0"])  # the same class again: a no-op


@pytest.mark.cuda
def test_cuda_matches_cpu(env_id: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    traces = []
    for device in ("cpu", "cuda"):
        env = mmrl.make_batched(env_id, num_envs=32, device=device)
        obs, _ = env.reset(seed=0)
        trace = []
        for t in range(40):
            actions = torch.from_numpy(scripted_actions(obs["text"].cpu().numpy(), t, env.single_action_space.n))
            obs, reward, *_ = env.step(actions)
            trace.append((obs["image"].cpu(), obs["text"].cpu(), reward.cpu()))
        traces.append(trace)
    for a, b in zip(*traces):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
