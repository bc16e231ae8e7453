"""The engine's contract on every registered env: faces, spaces, determinism, autoreset, bad input."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import mmrl
from mmrl.core.batched_env import select_rows
from mmrl.core.spaces import TextSpace
from tests.conftest import scripted_actions


def test_gymnasium_check_env(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    gym_check_env(env.unwrapped, skip_render_check=False)


def test_sb3_check_env(env_id: str) -> None:
    sb3_check_env(gym.make(env_id).unwrapped, warn=True)


def test_observation_space_layout(env_id: str) -> None:
    env = gym.make(env_id)
    space = env.observation_space
    assert isinstance(space, gym.spaces.Dict)
    assert space["image"].dtype == np.uint8 and space["image"].shape[0] == 3
    assert isinstance(space["text"], TextSpace) and space["text"].dtype == np.int64
    assert space["text"].high.max() == len(space["text"].vocabulary) - 1


def test_random_rollout_stays_in_space(env_id: str) -> None:
    env = gym.make(env_id)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    episodes = 0
    for _ in range(400):
        assert env.observation_space.contains(obs), obs
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert np.isfinite(reward)
        if terminated or truncated:
            assert env.observation_space.contains(obs)
            episodes += 1
            obs, _ = env.reset()
    assert episodes >= 3


def test_batched_rollout_stays_in_space(env_id: str) -> None:
    env = mmrl.make_batched(env_id, num_envs=64)
    space = env.single_observation_space
    obs, _ = env.reset(seed=1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        actions = torch.randint(env.single_action_space.n, (64,), generator=generator)
        obs, _, _, _, info = env.step(actions)
        for key, value in obs.items():
            sub = space[key]
            assert tuple(value.shape[1:]) == sub.shape and value.dtype == torch.from_numpy(np.zeros(0, sub.dtype)).dtype
            assert int(value.min()) >= sub.low.min() and int(value.max()) <= sub.high.max()
        final = info["final_observation"]
        for row in range(len(info["done_index"])):
            assert space.contains({k: v[row].numpy() for k, v in final.items()})
    assert space.contains({k: v[5].numpy() for k, v in obs.items()})


def _single_rollout(env_id: str, seed: int, steps: int) -> list[tuple]:
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    n = env.action_space.n
    trace = []
    for t in range(steps):
        action = int(scripted_actions(obs["text"], t, n))
        obs, reward, terminated, truncated, _ = env.step(action)
        trace.append((obs["image"].copy(), obs["text"].copy(), reward, terminated, truncated))
        if terminated or truncated:
            break
    return trace


def _batched_rollout(env_id: str, seed: int, num_envs: int, steps: int, row: int) -> list[tuple]:
    env = mmrl.make_batched(env_id, num_envs=num_envs)
    obs, _ = env.reset(seed=seed)
    n = env.single_action_space.n
    trace = []
    for t in range(steps):
        actions = scripted_actions(obs["text"].numpy(), t, n)
        obs, reward, terminated, truncated, info = env.step(torch.from_numpy(actions))
        done = bool(terminated[row] | truncated[row])
        if done:
            j = int(torch.nonzero(info["done_index"] == row)[0, 0])
            image, text = info["final_observation"]["image"][j], info["final_observation"]["text"][j]
        else:
            image, text = obs["image"][row], obs["text"][row]
        trace.append((image.numpy(), text.numpy(), float(reward[row]), bool(terminated[row]), bool(truncated[row])))
        if done:
            break
    return trace


def _assert_same(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for (i1, t1, r1, te1, tr1), (i2, t2, r2, te2, tr2) in zip(a, b):
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(t1, t2)
        assert (r1, te1, tr1) == (r2, te2, tr2)


@pytest.mark.parametrize("seed", [0, 7])
def test_same_seed_same_episode_whatever_the_batch_size_and_face(env_id: str, seed: int) -> None:
    single = _single_rollout(env_id, seed + 3, 60)
    assert len(single) >= 2
    _assert_same(single, _single_rollout(env_id, seed + 3, 60))
    _assert_same(single, _batched_rollout(env_id, seed + 3, 1, 60, row=0))
    # row i of a batch seeded s replays a single env seeded s + i
    _assert_same(single, _batched_rollout(env_id, seed, 64, 60, row=3))


def test_different_seeds_differ(env_id: str) -> None:
    a = _single_rollout(env_id, 0, 5)
    b = _single_rollout(env_id, 1, 5)
    assert any(not np.array_equal(x[0], y[0]) or not np.array_equal(x[1], y[1]) for x, y in zip(a, b))


def test_row_is_independent_of_other_rows_actions(env_id: str) -> None:
    """Row 0's episode does not depend on what the other rows do."""
    traces = []
    for other in (0, 1):
        env = mmrl.make_batched(env_id, num_envs=8)
        obs, _ = env.reset(seed=11)
        rows = []
        for t in range(15):
            actions = torch.full((8,), other, dtype=torch.int64)
            actions[0] = int(obs["text"][0].sum()) % env.single_action_space.n
            obs, reward, *_ = env.step(actions)
            rows.append((obs["image"][0].clone(), obs["text"][0].clone(), float(reward[0])))
        traces.append(rows)
    for (i1, t1, r1), (i2, t2, r2) in zip(*traces):
        assert torch.equal(i1, i2) and torch.equal(t1, t2) and r1 == r2


def test_autoreset_keeps_final_observation_and_leaves_other_rows_alone(env_id: str) -> None:
    env = mmrl.make_batched(env_id, num_envs=16)
    obs, _ = env.reset(seed=5)
    seen_done = 0
    for t in range(200):
        before_episode = env.episode.clone()
        actions = torch.from_numpy(scripted_actions(obs["text"].numpy(), t, env.single_action_space.n))
        obs, reward, terminated, truncated, info = env.step(actions)
        done = terminated | truncated
        index = info["done_index"]
        assert torch.equal(index, torch.nonzero(done).flatten())
        assert torch.equal(env.episode, before_episode + done.long())
        assert bool((env.elapsed[done] == 0).all()) and bool((env.elapsed[~done] > 0).all())
        assert info["final_observation"]["image"].shape[0] == len(index)
        if len(index) and seen_done < 5:
            seen_done += len(index)
            # the fresh observation of a restarted row is its new episode's first observation
            fresh = mmrl.make_batched(env_id, num_envs=1)
            row = int(index[0])
            first, _ = fresh.reset(seed=int(env.seeds[row]))
            for _ in range(int(env.episode[row])):
                first, _ = fresh.reset()
            assert torch.equal(first["text"][0], obs["text"][row])
            assert torch.equal(first["image"][0], obs["image"][row])
    assert seen_done > 0


@pytest.mark.parametrize("options", [{}, {"view": "egocentric"}], ids=["defaults", "egocentric"])
def test_observation_fields_are_all_that_observe_reads(env_id: str, options: dict) -> None:
    """An env that declares ``observation_fields`` observes the same from those fields alone (the final
    observations of finished rows gather only them): the other fields are set to None here, so reading one fails."""
    if options and env_id != "mmrl/Navigate-v0":
        pytest.skip("the egocentric view is Navigate's")
    env = mmrl.make_batched(env_id, num_envs=12, **options)
    env.reset(seed=2)
    for _ in range(5):
        env.step(torch.randint(env.single_action_space.n, (12,), generator=torch.Generator().manual_seed(0)))
    if env.observation_fields is None:
        pytest.skip(f"{env_id} observes from its whole state")
    rows = torch.tensor([7, 0, 3])
    only = select_rows(env.state, rows, env.observation_fields)
    only = dataclasses.replace(
        only, **{f.name: None for f in dataclasses.fields(only) if f.name not in env.observation_fields}
    )
    expected, got = env._observe(select_rows(env.state, rows)), env._observe(only)
    assert all(torch.equal(expected[key], got[key]) for key in expected)


def test_vector_faces(env_id: str) -> None:
    venv = gym.make_vec(env_id, num_envs=4)
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    obs, infos = venv.reset(seed=2)
    assert venv.observation_space.contains(obs)
    finals = 0
    for t in range(80):
        obs, rewards, terminated, truncated, infos = venv.step(scripted_actions(obs["text"], t, venv.single_action_space.n))
        assert venv.observation_space.contains(obs)
        if "final_obs" in infos:
            for i in np.flatnonzero(infos["_final_obs"]):
                assert terminated[i] or truncated[i]
                assert venv.single_observation_space.contains(infos["final_obs"][i])
                finals += 1
    assert finals > 0

    sb3 = mmrl.make_vec(env_id, num_envs=4, seed=2)
    obs = sb3.reset()
    assert obs["image"].shape == (4, *sb3.observation_space["image"].shape)
    dones_seen = 0
    for t in range(80):
        obs, rewards, dones, infos = sb3.step(scripted_actions(obs["text"], t, sb3.action_space.n))
        for i in np.flatnonzero(dones):
            assert "terminal_observation" in infos[i] and "episode" in infos[i]
            assert sb3.observation_space.contains(infos[i]["terminal_observation"])
            dones_seen += 1
    assert dones_seen > 0


def test_sb3_vecenv_as_tensors(env_id: str) -> None:
    venv = mmrl.make_vec(env_id, num_envs=3, seed=0, as_tensors=True)
    obs = venv.reset()
    assert isinstance(obs["image"], torch.Tensor) and obs["image"].device.type == "cpu"
    obs, rewards, dones, infos = venv.step(torch.zeros(3, dtype=torch.int64))
    assert isinstance(rewards, torch.Tensor) and isinstance(dones, torch.Tensor)


@pytest.mark.parametrize(
    "actions, match",
    [
        (np.array([0, 1, 9]), r"in \[0, \d+\); got \[9\] at rows \[2\]"),
        (np.array([0, -1, 0]), r"got \[-1\] at rows \[1\]"),
        (np.array([0, 1]), r"shape \(3,\); got \(2,\)"),
        (np.array([0.0, 1.0, 1.0]), r"must be integers .* got dtype torch.float64"),
        (np.array([0.0, np.nan, 1.0]), r"NaN"),
    ],
)
def test_bad_actions_raise_clear_errors(env_id: str, actions: np.ndarray, match: str) -> None:
    env = mmrl.make_batched(env_id, num_envs=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(actions)


@pytest.mark.parametrize("action", [99, -1, 1.5, np.array([0, 1]), "2", float("nan")])
def test_single_env_rejects_bad_actions(env_id: str, action: object) -> None:
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="invalid action"):
        env.step(action)


def test_step_before_reset_and_after_end(env_id: str) -> None:
    env = mmrl.make_batched(env_id, num_envs=2)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(torch.zeros(2, dtype=torch.int64))
    single = gym.make(env_id).unwrapped
    single.reset(seed=0)
    for _ in range(single.batched_env.max_episode_steps):
        _, _, terminated, truncated, _ = single.step(0)
        if terminated or truncated:
            break
    with pytest.raises(RuntimeError, match="call reset"):
        single.step(0)


def test_unknown_option_names_the_key_and_the_valid_ones(env_id: str) -> None:
    with pytest.raises(TypeError, match=r"no option 'slate_sise'; valid options: \["):
        gym.make(env_id, slate_sise=3)
    with pytest.raises(TypeError, match="no option 'bogus'"):
        mmrl.make_vec(env_id, num_envs=2, bogus=1)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="num_envs must be a positive integer; got 0"):
        mmrl.make_batched("mmrl/Recommend-v0", num_envs=0)
    with pytest.raises(gym.error.NameNotFound, match="registered"):
        mmrl.make_vec("mmrl/Nope-v0", num_envs=2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            mmrl.make_batched("mmrl/Recommend-v0", num_envs=2, device="cuda")


def test_render_shows_image_and_text(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    size = obs["image"].shape[1]
    assert frame.shape[0] >= 4 * size and frame.shape[1] > 4 * size  # enlarged image + a text panel
    enlarged = np.repeat(np.repeat(obs["image"].transpose(1, 2, 0), 4, 0), 4, 1)
    np.testing.assert_array_equal(frame[: 4 * size, : 4 * size], enlarged[: frame.shape[0]])
    assert frame[:, 4 * size :].max() > 200  # text was drawn in the panel
    assert len(env.unwrapped.decode(obs["text"]).split()) >= 3


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
