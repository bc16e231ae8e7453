"""``compile=True``: torch.compile fuses an env's step and reset without changing a single episode.

Compilation takes tens of seconds per env on 2 cores, so CI compiles Recommend (the default task,
and the configuration behind the copy-bound figure in BENCHMARKS.md); the other envs are ``slow``.
"""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import mmrl
from tests.conftest import scripted_actions


def _rollout(env: mmrl.BatchedEnv, steps: int) -> list[torch.Tensor]:
    obs, info = env.reset(seed=3)
    trace = [obs["image"].clone(), obs["text"].clone()]
    for t in range(steps):
        actions = torch.from_numpy(scripted_actions(obs["text"].numpy(), t, env.single_action_space.n))
        obs, reward, terminated, truncated, info = env.step(actions)
        final = info["final_observation"]
        trace += [obs["image"], obs["text"], reward, terminated, truncated, info["episode_return"],
                  info["episode_length"], info["done_index"], final["image"], final["text"], env.elapsed.clone()]
    return trace


def _assert_compiled_replays_eager(env_id: str, steps: int) -> None:
    eager = mmrl.make_batched(env_id, num_envs=16)
    compiled = mmrl.make_batched(env_id, num_envs=16, compile=True)
    assert compiled.compiled and not eager.compiled
    a, b = _rollout(eager, steps), _rollout(compiled, steps)
    assert sum(int(x.numel()) for x in a[9::11]) > 0, "no episode ended: the reset path was not exercised"
    for i, (x, y) in enumerate(zip(a, b)):
        assert torch.equal(x, y), f"compiled and eager differ at trace entry {i}"


def test_compiled_recommend_replays_eager_episodes() -> None:
    _assert_compiled_replays_eager("mmrl/Recommend-v0", steps=40)


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["mmrl/Navigate-v0", "mmrl/Diagnose-v0"])
def test_compiled_env_replays_eager_episodes(env_id: str) -> None:
    _assert_compiled_replays_eager(env_id, steps=70)


def test_compile_flag_reaches_every_face() -> None:
    env = mmrl.make_batched("mmrl/Recommend-v0", num_envs=2)
    assert env.compile() is env and env.compiled
    assert env.compile() is env  # idempotent
    assert mmrl.make_vec("mmrl/Recommend-v0", num_envs=2, compile=True).batched_env.compiled
    venv = gym.make_vec("mmrl/Recommend-v0", num_envs=2, compile=True)
    assert venv.unwrapped.batched_env.compiled
    assert not mmrl.make_vec("mmrl/Recommend-v0", num_envs=2).batched_env.compiled


def test_bad_compile_arguments_raise() -> None:
    with pytest.raises(TypeError, match="compile must be True or False; got 'yes'"):
        mmrl.make_batched("mmrl/Recommend-v0", num_envs=2, compile="yes")
    env = mmrl.make_batched("mmrl/Recommend-v0", num_envs=2)
    with pytest.raises(TypeError, match="bogus"):
        env.compile(bogus=1)
    assert not env.compiled


def test_cpu_compile_defaults_to_scalar_code_unless_told_otherwise() -> None:
    env = mmrl.make_batched("mmrl/Recommend-v0", num_envs=2)
    assert env._compile_options({}) == {"options": {"cpp.simdlen": 1}}
    assert env._compile_options({"options": {"cpp.simdlen": None}}) == {"options": {"cpp.simdlen": None}}
    assert env._compile_options({"options": {"max_autotune": True}, "fullgraph": True}) == {
        "options": {"cpp.simdlen": 1, "max_autotune": True}, "fullgraph": True}
    assert env._compile_options({"mode": "max-autotune"}) == {"mode": "max-autotune"}  # mode and options exclude each other
