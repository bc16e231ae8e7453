"""The engine contract as reusable checks: what every registered env must do, whoever wrote it.

``mmrl``'s own test suite runs :data:`CONTRACT_CHECKS` on every registered env; an env of your own passes
the same ones with::

    import mmrl
    from mmrl.testing import check_env_contract

    mmrl.register_env("me/MyTask-v0", MyTask)
    check_env_contract("me/MyTask-v0")          # raises AssertionError naming what broke

Each check takes an env id and the env's options, builds the faces it needs (``gym.make``,
``gym.make_vec``, :func:`mmrl.make_batched`, :func:`mmrl.make_vec`) and asserts: Gymnasium's and SB3's
checkers pass; every observation lies in its space; the same seed replays the same episode whatever the
face and the batch size (row ``i`` of a batch seeded ``s`` is the single env seeded ``s + i``); a row does
not depend on the others; finished rows restart in the same step and hand their last observation on; bad
actions and unknown options fail with clear errors; render shows the image and the text; the reference
policies and task metrics the env declares run. They use small batches and few steps (seconds each).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import mmrl
from mmrl.core.batched_env import BatchedEnv, select_rows
from mmrl.core.spaces import TextSpace

Options = dict[str, Any]


def scripted_actions(obs_text: np.ndarray, step: int, n: int) -> np.ndarray:
    """Deterministic actions that depend on the observation, so that diverging observations diverge actions."""
    return ((obs_text.sum(axis=-1) + step) % n).astype(np.int64)


def _expect_error(error: type[BaseException], match: str, call: Callable[[], Any]) -> None:
    import re

    try:
        call()
    except error as raised:
        assert re.search(match, str(raised)), f"{error.__name__} raised, but {str(raised)!r} does not match {match!r}"
        return
    raise AssertionError(f"expected {error.__name__} matching {match!r}; nothing was raised")


# ---------------------------------------------------------------------------------------------- checks
def check_gymnasium_checker(env_id: str, options: Options) -> None:
    """Gymnasium's ``check_env`` (render included) passes on the single-env face."""
    from gymnasium.utils.env_checker import check_env

    check_env(gym.make(env_id, render_mode="rgb_array", **options).unwrapped, skip_render_check=False)


def check_sb3_checker(env_id: str, options: Options) -> None:
    """Stable-Baselines3's ``check_env`` passes on the single-env face."""
    from stable_baselines3.common.env_checker import check_env

    check_env(gym.make(env_id, **options).unwrapped, warn=True)


def check_observation_space_layout(env_id: str, options: Options) -> None:
    """A ``Dict`` with a channel-first uint8 ``image`` and a :class:`TextSpace` of int64 token ids."""
    space = gym.make(env_id, **options).observation_space
    assert isinstance(space, gym.spaces.Dict), space
    assert space["image"].dtype == np.uint8 and space["image"].shape[0] == 3, space["image"]
    assert isinstance(space["text"], TextSpace) and space["text"].dtype == np.int64, space["text"]
    assert space["text"].high.max() == len(space["text"].vocabulary) - 1


def check_single_rollout_in_space(env_id: str, options: Options) -> None:
    """400 random steps of the single env: every observation in the space, finite rewards, episodes end."""
    env = gym.make(env_id, **options)
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
    assert episodes >= 3, f"only {episodes} episodes ended in 400 random steps"


def check_batched_rollout_in_space(env_id: str, options: Options) -> None:
    """100 random steps of 64 rows: shapes, dtypes and bounds of every observation and final observation."""
    env = mmrl.make_batched(env_id, num_envs=64, **options)
    space = env.single_observation_space
    obs, _ = env.reset(seed=1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        actions = torch.randint(env.single_action_space.n, (64,), generator=generator)
        obs, reward, _, _, info = env.step(actions)
        assert bool(torch.isfinite(reward).all())
        for key, value in obs.items():
            sub = space[key]
            assert tuple(value.shape[1:]) == sub.shape and value.dtype == torch.from_numpy(np.zeros(0, sub.dtype)).dtype
            assert int(value.min()) >= sub.low.min() and int(value.max()) <= sub.high.max()
        final = info["final_observation"]
        for row in range(len(info["done_index"])):
            assert space.contains({k: v[row].numpy() for k, v in final.items()})
    assert space.contains({k: v[5].numpy() for k, v in obs.items()})


def _single_rollout(env_id: str, options: Options, seed: int, steps: int) -> list[tuple]:
    env = gym.make(env_id, **options)
    obs, _ = env.reset(seed=seed)
    n = env.action_space.n
    trace = []
    for t in range(steps):
        obs, reward, terminated, truncated, _ = env.step(int(scripted_actions(obs["text"], t, n)))
        trace.append((obs["image"].copy(), obs["text"].copy(), reward, terminated, truncated))
        if terminated or truncated:
            break
    return trace


def _batched_rollout(env_id: str, options: Options, seed: int, num_envs: int, steps: int, row: int) -> list[tuple]:
    env = mmrl.make_batched(env_id, num_envs=num_envs, **options)
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
    assert len(a) == len(b), f"episodes of {len(a)} and {len(b)} steps"
    for (i1, t1, r1, te1, tr1), (i2, t2, r2, te2, tr2) in zip(a, b):
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(t1, t2)
        assert (r1, te1, tr1) == (r2, te2, tr2)


def check_seed_replays_episode(env_id: str, options: Options) -> None:
    """The same seed gives the same episode on the single face and as any row of a batch (row ``i`` of a batch
    seeded ``s`` is seed ``s + i``); other seeds give other episodes."""
    for seed in (0, 7):
        single = _single_rollout(env_id, options, seed + 3, 60)
        assert len(single) >= 2, "the first action ended the episode: the replay checks need longer episodes"
        _assert_same(single, _single_rollout(env_id, options, seed + 3, 60))
        _assert_same(single, _batched_rollout(env_id, options, seed + 3, 1, 60, row=0))
        _assert_same(single, _batched_rollout(env_id, options, seed, 64, 60, row=3))
    a, b = _single_rollout(env_id, options, 0, 5), _single_rollout(env_id, options, 1, 5)
    assert any(not np.array_equal(x[0], y[0]) or not np.array_equal(x[1], y[1]) for x, y in zip(a, b))


def check_rows_are_independent(env_id: str, options: Options) -> None:
    """Row 0's episode does not depend on what the other rows do."""
    traces = []
    for other in (0, 1):
        env = mmrl.make_batched(env_id, num_envs=8, **options)
        obs, _ = env.reset(seed=11)
        rows = []
        for _ in range(15):
            actions = torch.full((8,), other, dtype=torch.int64)
            actions[0] = int(obs["text"][0].sum()) % env.single_action_space.n
            obs, reward, *_ = env.step(actions)
            rows.append((obs["image"][0].clone(), obs["text"][0].clone(), float(reward[0])))
        traces.append(rows)
    for (i1, t1, r1), (i2, t2, r2) in zip(*traces):
        assert torch.equal(i1, i2) and torch.equal(t1, t2) and r1 == r2


def check_autoreset(env_id: str, options: Options) -> None:
    """Finished rows restart in the same step (their next episode's first observation), hand on their final
    observation, count the episode and reset ``elapsed``; the other rows are left alone."""
    env = mmrl.make_batched(env_id, num_envs=16, **options)
    obs, _ = env.reset(seed=5)
    seen_done = 0
    for t in range(200):
        before_episode = env.episode.clone()
        actions = torch.from_numpy(scripted_actions(obs["text"].numpy(), t, env.single_action_space.n))
        obs, _, terminated, truncated, info = env.step(actions)
        done = terminated | truncated
        index = info["done_index"]
        assert torch.equal(index, torch.nonzero(done).flatten())
        assert torch.equal(env.episode, before_episode + done.long())
        assert bool((env.elapsed[done] == 0).all()) and bool((env.elapsed[~done] > 0).all())
        assert bool((info["episode_length"][done] > 0).all())
        assert info["final_observation"]["image"].shape[0] == len(index)
        if "end_reason" in info:
            assert bool((info["end_reason"][truncated] == len(env.end_reasons) - 1).all()), "truncation's end reason"
        if len(index) and seen_done < 5:
            seen_done += len(index)
            fresh = mmrl.make_batched(env_id, num_envs=1, **options)
            row = int(index[0])
            first, _ = fresh.reset(seed=int(env.seeds[row]))
            for _ in range(int(env.episode[row])):
                first, _ = fresh.reset()
            assert torch.equal(first["text"][0], obs["text"][row])
            assert torch.equal(first["image"][0], obs["image"][row])
    assert seen_done > 0, "no episode ended in 200 steps"


def check_observation_fields(env_id: str, options: Options) -> None:
    """An env that declares ``observation_fields`` observes the same from those fields alone (final observations
    gather only them): the other fields are set to None here, so reading one fails."""
    env = mmrl.make_batched(env_id, num_envs=12, **options)
    env.reset(seed=2)
    for _ in range(5):
        env.step(torch.randint(env.single_action_space.n, (12,), generator=torch.Generator().manual_seed(0)))
    if env.observation_fields is None:
        return
    rows = torch.tensor([7, 0, 3])
    only = select_rows(env.state, rows, env.observation_fields)
    only = dataclasses.replace(only, **{f.name: None for f in dataclasses.fields(only) if f.name not in env.observation_fields})
    expected, got = env._observe(select_rows(env.state, rows)), env._observe(only)
    assert all(torch.equal(expected[key], got[key]) for key in expected)


def check_vector_faces(env_id: str, options: Options) -> None:
    """``gym.make_vec`` (same-step autoreset, ``final_obs`` in infos) and ``mmrl.make_vec`` (SB3's
    ``terminal_observation`` and ``episode``; numpy or tensors out)."""
    venv = gym.make_vec(env_id, num_envs=4, **options)
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    obs, _ = venv.reset(seed=2)
    assert venv.observation_space.contains(obs)
    finals = 0
    for t in range(80):
        obs, _, terminated, truncated, infos = venv.step(scripted_actions(obs["text"], t, venv.single_action_space.n))
        assert venv.observation_space.contains(obs)
        if "final_obs" in infos:
            for i in np.flatnonzero(infos["_final_obs"]):
                assert terminated[i] or truncated[i]
                assert venv.single_observation_space.contains(infos["final_obs"][i])
                finals += 1
    assert finals > 0

    sb3 = mmrl.make_vec(env_id, num_envs=4, seed=2, **options)
    obs = sb3.reset()
    assert obs["image"].shape == (4, *sb3.observation_space["image"].shape)
    dones_seen = 0
    for t in range(80):
        obs, _, dones, infos = sb3.step(scripted_actions(obs["text"], t, sb3.action_space.n))
        for i in np.flatnonzero(dones):
            assert "terminal_observation" in infos[i] and "episode" in infos[i]
            assert sb3.observation_space.contains(infos[i]["terminal_observation"])
            dones_seen += 1
    assert dones_seen > 0

    tensors = mmrl.make_vec(env_id, num_envs=3, seed=0, as_tensors=True, **options)
    obs = tensors.reset()
    assert isinstance(obs["image"], torch.Tensor) and obs["image"].device.type == "cpu"
    _, rewards, dones, _ = tensors.step(torch.zeros(3, dtype=torch.int64))
    assert isinstance(rewards, torch.Tensor) and isinstance(dones, torch.Tensor)


def check_bad_input(env_id: str, options: Options) -> None:
    """Bad actions, steps out of order and unknown options fail with errors that name the bad value."""
    env = mmrl.make_batched(env_id, num_envs=3, **options)
    _expect_error(RuntimeError, "before reset", lambda: env.step(torch.zeros(3, dtype=torch.int64)))
    env.reset(seed=0)
    for actions, match in [
        (np.array([0, 1, 10**6]), r"in \[0, \d+\); got \[1000000\] at rows \[2\]"),
        (np.array([0, -1, 0]), r"got \[-1\] at rows \[1\]"),
        (np.array([0, 1]), r"shape \(3,\); got \(2,\)"),
        (np.array([0.0, 1.0, 1.0]), r"must be integers .* got dtype torch.float64"),
        (np.array([0.0, np.nan, 1.0]), r"NaN"),
    ]:
        _expect_error(ValueError, match, lambda: env.step(actions))
    single = gym.make(env_id, **options).unwrapped
    single.reset(seed=0)
    for action in (10**6, -1, 1.5, np.array([0, 1]), "2", float("nan")):
        _expect_error(ValueError, "invalid action", lambda: single.step(action))
    for _ in range(single.batched_env.max_episode_steps):
        _, _, terminated, truncated, _ = single.step(0)
        if terminated or truncated:
            break
    _expect_error(RuntimeError, "call reset", lambda: single.step(0))
    _expect_error(TypeError, r"no option 'bogus_option'; valid options: \[", lambda: gym.make(env_id, bogus_option=3))
    _expect_error(TypeError, "no option 'bogus'", lambda: mmrl.make_vec(env_id, num_envs=2, bogus=1))


def check_render(env_id: str, options: Options) -> None:
    """``render()`` is the observation image enlarged 4x beside a panel with the decoded text."""
    env = gym.make(env_id, render_mode="rgb_array", **options)
    obs, _ = env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    size = obs["image"].shape[1]
    assert frame.shape[0] >= 4 * size and frame.shape[1] > 4 * size  # enlarged image + a text panel
    enlarged = np.repeat(np.repeat(obs["image"].transpose(1, 2, 0), 4, 0), 4, 1)
    np.testing.assert_array_equal(frame[: 4 * size, : 4 * size], enlarged[: frame.shape[0]])
    assert frame[:, 4 * size :].max() > 200, "no text drawn in the panel"
    assert len(env.unwrapped.decode(obs["text"]).split()) >= 1


def check_reference_policies(env_id: str, options: Options) -> None:
    """Every reference policy the env offers (random, oracle, its own) plays whole episodes with valid actions,
    and the env's task metrics (if it declares them) compute from those episodes."""
    from mmrl.agents.reference import make_reference_policy, policy_names
    from mmrl.episodes import run_episodes
    from mmrl.metrics import episode_metrics, task_metrics_for

    env: BatchedEnv = mmrl.make_batched(env_id, num_envs=16, **options)
    names = policy_names(env)
    assert "random" in names, names
    task = task_metrics_for(env)
    for name in names:
        policy = make_reference_policy(name, env, seed=0)
        n = env.single_action_space.n

        def act(obs: dict, info: dict, policy: Any = policy) -> torch.Tensor:
            actions = policy.act(obs, info)
            assert actions.shape == (env.num_envs,) and bool(((actions >= 0) & (actions < n)).all()), (name, actions)
            return actions

        stats = run_episodes(env, act, seed=0, update=policy.update, sum_keys=task.sum_keys if task else ())
        assert np.isfinite(stats.returns).all() and (stats.lengths > 0).all()
        episode_metrics(stats, task)
    _expect_error(ValueError, "no reference policy 'no-such-policy'", lambda: make_reference_policy("no-such-policy", env))


#: every check of the contract, in the order :func:`check_env_contract` runs them
CONTRACT_CHECKS: tuple[Callable[[str, Options], None], ...] = (
    check_observation_space_layout,
    check_gymnasium_checker,
    check_sb3_checker,
    check_single_rollout_in_space,
    check_batched_rollout_in_space,
    check_seed_replays_episode,
    check_rows_are_independent,
    check_autoreset,
    check_observation_fields,
    check_vector_faces,
    check_bad_input,
    check_render,
    check_reference_policies,
)


def check_env_contract(env_id: str, **options: Any) -> None:
    """Run every check of :data:`CONTRACT_CHECKS` on ``env_id`` built with ``options``.

    :raises AssertionError: from the first check that fails (its name is in the traceback)."""
    for check in CONTRACT_CHECKS:
        check(env_id, dict(options))


# ---------------------------------------------------------------------------------------------- fuzzing
def random_options(env_id: str, rng: np.random.Generator) -> Options:
    """A random valid option set of a built-in env (sizes, modes, the long-term setting), for fuzzing."""
    if env_id == "mmrl/Recommend-v0":
        slate = int(rng.integers(2, 17))
        cols = int(np.ceil(np.sqrt(slate)))
        side = max(16, 12 * max(cols, int(np.ceil(slate / cols))))
        options: Options = dict(
            slate_size=slate, image_size=side + int(rng.integers(0, 24)), max_steps=int(rng.integers(1, 40)),
            reward=str(rng.choice(["click", "revenue", "satisfaction"])), patience=int(rng.integers(1, 6)),
            num_categories=int(rng.integers(2, 9)), num_colours=int(rng.integers(2, 9)),
        )  # fmt: skip
        if rng.random() < 0.5:
            options.update(
                clickbait_appeal=int(rng.integers(0, 6)), trust_levels=int(rng.integers(0, 9)), trust_weight=int(rng.integers(0, 4)),
                betrayal=int(rng.integers(0, 4)), sessions=int(rng.integers(1, 5)), session_steps=int(rng.integers(0, 12)),
            )  # fmt: skip
        return options
    if env_id == "mmrl/Navigate-v0":
        room = int(rng.integers(3, 8))
        view = str(rng.choice(["top_down", "egocentric"]))
        cells = room + 2 if view == "top_down" else 2 * room + 1
        return dict(
            room_size=room, num_distractors=int(rng.integers(0, min(4, room * room - 3) + 1)), view=view,
            num_colours=int(rng.integers(2, 7)), mission=str(rng.choice(["goto", "pickup", "mixed"])),
            image_size=4 * cells + int(rng.integers(0, 24)), max_steps=int(rng.integers(1, 64)),
        )  # fmt: skip
    if env_id == "mmrl/Diagnose-v0":
        return dict(
            patients=int(rng.integers(1, 5)), num_findings=int(rng.integers(2, 5)), image_size=int(rng.integers(32, 140)),
            clear_scan_prob=float(rng.random()), test_cost=float(rng.random() * 0.2), max_steps=int(rng.integers(1, 30)),
        )  # fmt: skip
    if env_id == "mmrl/Tutor-v0":
        slate, skills = int(rng.integers(2, 9)), int(rng.integers(2, 6))
        cells = slate  # the image is the slate
        cols = int(np.ceil(np.sqrt(cells)))
        side = 10 * max(cols, int(np.ceil(cells / cols)))  # the smallest readable cell is 10 px
        learn = sorted(float(x) for x in rng.random(2))
        forget = sorted(float(x) * 0.2 for x in rng.random(2))
        return dict(
            slate_size=slate, num_skills=skills, image_size=side + int(rng.integers(0, 24)), max_steps=int(rng.integers(1, 50)),
            reward=str(rng.choice(["mastery", "post_test"])), patience=int(rng.integers(1, 10)),
            boredom_streak=int(rng.integers(2, 6)), learn_rate_min=learn[0], learn_rate_max=learn[1],
            forget_rate_min=forget[0], forget_rate_max=forget[1], path_share=float(rng.random()),
        )  # fmt: skip
    raise ValueError(f"no random options for {env_id!r}")


def fuzz_steps(env_id: str, options: Options, num_envs: int, steps: int, seed: int) -> int:
    """Step a batched env of ``options`` with random actions and check every step: shapes, dtypes and bounds of the
    observations (and final observations), finite rewards, and that the same seed and actions replay it exactly
    (row 0 also alone, in a batch of one). Returns the env steps taken.

    :raises AssertionError: naming the env, the options and the step."""
    generator = torch.Generator().manual_seed(seed)
    env = mmrl.make_batched(env_id, num_envs=num_envs, **options)
    alone = mmrl.make_batched(env_id, num_envs=1, **options)
    space = env.single_observation_space
    low = {k: int(space[k].low.min()) for k in space.spaces}
    high = {k: int(space[k].high.max()) for k in space.spaces}
    obs, _ = env.reset(seed=seed)
    first, _ = alone.reset(seed=seed)
    where = f"{env_id} {options}"
    for step in range(steps):
        actions = torch.randint(env.single_action_space.n, (num_envs,), generator=generator)
        obs, reward, terminated, truncated, info = env.step(actions)
        first, reward_alone, *_ = alone.step(actions[:1])
        assert bool(torch.isfinite(reward).all()), f"{where}: non-finite reward at step {step}"
        for key, value in [*obs.items(), *info["final_observation"].items()]:
            assert tuple(value.shape[1:]) == space[key].shape, f"{where}: {key} shape {tuple(value.shape)} at step {step}"
            if value.numel():
                assert low[key] <= int(value.min()) and int(value.max()) <= high[key], f"{where}: {key} out of bounds at step {step}"
        assert all(torch.equal(obs[k][:1], first[k]) for k in obs) and float(reward[0]) == float(reward_alone[0]), (
            f"{where}: row 0 differs from the same episode alone at step {step}"
        )
    return steps * num_envs
