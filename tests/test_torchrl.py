"""TorchRL (#15): ``GymEnv(id)``, ``GymEnv(id, num_envs=N)`` and ``GymWrapper(gym.make_vec(id, ...))`` roll out and
pass ``check_env_specs`` for every registered env; with ``autoreset_mode=DISABLED`` a TorchRL rollout replays the
batched env exactly, final observations included; the action mask reaches TorchRL's ``ActionMask`` transform.

The TorchRL tests skip when torchrl is not installed (``pip install -e .[torchrl]``, also in ``.[dev]``); the
checks of what TorchRL relies on in mmrl's faces (the error wording, info dtypes, autoreset modes) always run."""

from __future__ import annotations

from types import ModuleType

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import mmrl
from tests.test_action_masks import SMALL

ENV_IDS = sorted(SMALL)


def torchrl_envs() -> ModuleType:
    return pytest.importorskip("torchrl.envs", reason="TorchRL is optional: pip install -e .[torchrl]")


# ---------------------------------------------------------------------------- what TorchRL relies on (no torchrl needed)
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_unknown_option_reads_like_pythons_own_error(env_id: str) -> None:
    """TorchRL's GymEnv passes ``frameskip`` and drops it only when the TypeError reads like Python's own."""
    name = env_id.split("/")[1].split("-")[0]
    with pytest.raises(TypeError, match=rf"^{name}\(\) got an unexpected keyword argument 'frameskip': .*valid options: \["):
        gym.make(env_id, frameskip=1)
    with pytest.raises(TypeError, match=r"got unexpected keyword arguments 'bogus', 'frameskip'"):
        mmrl.make_vec(env_id, num_envs=2, frameskip=1, bogus=2)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_single_env_info_values_all_have_a_dtype(env_id: str) -> None:
    env = gym.make(env_id, **SMALL[env_id])
    _, info = env.reset(seed=0)
    infos = [info] + [env.step(0)[4] for _ in range(3)]
    for info in infos:
        bad = {k: type(v).__name__ for k, v in info.items() if not isinstance(v, (np.ndarray, np.generic))}
        assert not bad, f"info values without a dtype: {bad}"


def test_vector_env_declares_its_autoreset_mode() -> None:
    same = gym.make_vec("mmrl/Recommend-v0", num_envs=2, image_size=32)
    assert same.autoreset_mode == AutoresetMode.SAME_STEP == same.metadata["autoreset_mode"]
    disabled = gym.make_vec("mmrl/Recommend-v0", num_envs=2, image_size=32, autoreset_mode="Disabled")
    assert disabled.autoreset_mode == AutoresetMode.DISABLED == disabled.metadata["autoreset_mode"]
    assert same.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP, "one instance's mode leaked into another's"
    with pytest.raises(ValueError, match=r"autoreset_mode must be one of \['SameStep', 'Disabled'\]; got 'NextStep'"):
        gym.make_vec("mmrl/Recommend-v0", num_envs=2, image_size=32, autoreset_mode="NextStep")


def test_disabled_autoreset_keeps_finished_rows_until_reset() -> None:
    venv = gym.make_vec("mmrl/Diagnose-v0", num_envs=3, autoreset_mode=AutoresetMode.DISABLED, patients=1, image_size=32)
    obs, _ = venv.reset(seed=0)
    obs, reward, terminated, truncated, infos = venv.step(np.array([3, 0, 0]))  # row 0 diagnoses: its episode ends
    assert terminated.tolist() == [True, False, False] and "final_obs" not in infos
    with pytest.raises(RuntimeError, match=r"step\(\) called on finished episodes \(rows \[0\]\)"):
        venv.step(np.array([0, 0, 0]))
    fresh, _ = venv.reset(options={"reset_mask": np.array([True, False, False])})
    assert np.array_equal(fresh["text"][1:], obs["text"][1:]), "rows not in the reset mask changed"
    venv.step(np.array([0, 1, 2]))


# ---------------------------------------------------------------------------- TorchRL itself
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gym_env_by_id(env_id: str) -> None:
    envs = torchrl_envs()
    from torchrl.envs.utils import check_env_specs

    env = envs.GymEnv(env_id, **SMALL[env_id])
    check_env_specs(env)
    env.auto_register_info_dict()  # the info entries (action_mask, affinity ...) become part of the data
    check_env_specs(env)
    data = env.rollout(20, break_when_any_done=False)
    assert data.batch_size == (20,) and data["image"].dtype == torch.uint8
    assert data["action_mask"].shape == (20, env.action_spec.shape[-1])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gym_env_with_num_envs(env_id: str) -> None:
    envs = torchrl_envs()
    from torchrl.envs.utils import check_env_specs

    # TorchRL runs N single envs in subprocesses that it starts with "spawn": they import mmrl, and so know its ids,
    # only through "mmrl:<id>" (or a main script that imports mmrl at its top level, which spawn imports again)
    env = envs.GymEnv(f"mmrl:{env_id}", num_envs=2, **SMALL[env_id])
    try:
        check_env_specs(env)
        data = env.rollout(5, break_when_any_done=False)
        assert data.batch_size == (2, 5) and "action_mask" in data.keys()
    finally:
        env.close()


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gym_wrapper_of_make_vec(env_id: str, mode: AutoresetMode) -> None:
    envs = torchrl_envs()
    from torchrl.envs.utils import check_env_specs

    env = envs.GymWrapper(gym.make_vec(env_id, num_envs=3, autoreset_mode=mode, **SMALL[env_id]))
    if mode == AutoresetMode.DISABLED:  # TorchRL registers an info reader by itself only for autoresetting envs
        env.auto_register_info_dict()
    check_env_specs(env)
    data = env.rollout(30, break_when_any_done=False)
    assert data.batch_size == (3, 30) and bool(data["next", "done"].any()), "no episode ended: autoreset untested"
    assert data["action_mask"].shape == (3, 30, env.action_spec.shape[-1])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_torchrl_rollout_replays_the_batched_env(env_id: str) -> None:
    """With ``autoreset_mode=DISABLED`` (TorchRL resets finished rows itself) every step of a TorchRL rollout, the
    final observation of each finished episode included, is what the batched env gives for the same actions."""
    envs = torchrl_envs()
    options = {**SMALL[env_id], "max_steps": 6}
    env = envs.GymWrapper(gym.make_vec(env_id, num_envs=3, autoreset_mode=AutoresetMode.DISABLED, **options))
    env.set_seed(0)  # resets with seed 0; the rollout's own reset starts each row's next episode
    steps = 20
    data = env.rollout(steps, break_when_any_done=False)
    batched = mmrl.make_batched(env_id, num_envs=3, **options)
    batched.reset(seed=0)
    obs, _ = batched.reset()
    assert all(torch.equal(obs[k], data[k][:, 0]) for k in obs)
    for t in range(steps):
        obs, reward, terminated, truncated, info = batched.step(data["action"][:, t].argmax(-1))
        expected = {k: v.index_copy(0, info["done_index"], info["final_observation"][k]) for k, v in obs.items()}
        for key, value in expected.items():
            assert torch.equal(data["next", key][:, t], value), f"step {t}: next {key!r} differs"
        assert torch.equal(data["next", "reward"][:, t, 0], reward)
        assert torch.equal(data["next", "done"][:, t, 0], terminated | truncated)
        if t + 1 < steps:
            assert all(torch.equal(data[k][:, t + 1], obs[k]) for k in obs), f"step {t + 1}: observation differs"
    assert int(data["next", "done"].sum()) >= 3, "too few episodes ended to test the final observations"


@pytest.mark.parametrize("env_id", ["mmrl/Navigate-v0", "mmrl/Diagnose-v0"])
def test_action_mask_transform_keeps_random_actions_allowed(env_id: str) -> None:
    envs = torchrl_envs()
    from torchrl.envs.utils import check_env_specs

    base = envs.GymWrapper(gym.make_vec(env_id, num_envs=4, autoreset_mode=AutoresetMode.DISABLED, **SMALL[env_id]))
    base.auto_register_info_dict()  # info["action_mask"] becomes the "action_mask" entry ActionMask reads
    env = envs.TransformedEnv(base, envs.ActionMask())
    check_env_specs(env)
    data = env.rollout(30, break_when_any_done=False)  # random actions drawn from the masked action spec
    masks, actions = data["action_mask"], data["action"].bool()
    assert bool((~masks).any()), "no action was ever masked: the check below proves nothing"
    assert bool((masks & actions).any(-1).all()), "a random action outside the mask"
