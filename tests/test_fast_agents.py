"""FastPPO / FastDQN and their device-resident buffers (issue #6): same numbers as SB3, same API, they learn.

* GAE: on a fixed batch of random transitions the device buffer's advantages and returns equal SB3's
  ``DictRolloutBuffer``'s; ``get`` covers every transition exactly once per epoch with SB3's shapes and dtypes.
* Replay: samples are whole transitions with SB3's shapes/dtypes and SB3's timeout handling.
* Agents: ``learn()`` / ``save()`` / ``load()`` round trip with identical deterministic actions, zips that stock
  SB3 loads, ``ep_rew_mean`` logged, a clear error for a numpy env.
* No silent change of the algorithm: under one seed a FastPPO iteration collects the same rollout and makes the
  same update as stock PPO, and FastDQN stores the same transitions as stock DQN. Learning easy Recommend as well
  as stock PPO does (same seed and budget) takes minutes on a CPU, so that comparison is marked slow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.buffers import DictReplayBuffer, DictRolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter, Logger

import mmrl
from mmrl.agents.fast import FastDQN, FastPPO
from mmrl.learning import reference_return, train_and_evaluate
from mmrl.rollouts import DeviceDictReplayBuffer, DeviceDictRolloutBuffer
from mmrl.train import compose_config
from tests.conftest import env_options

ENV_ID = "mmrl/Recommend-v0"
EASY_RECOMMEND = env_options("recommend")  # the setting the default training config runs
N_STEPS, N_ENVS = 16, 8
SPACE = spaces.Dict(
    image=spaces.Box(0, 255, (3, 4, 4), np.uint8),
    text=spaces.Box(0, 10_000, (5,), np.int64),
)
ACTIONS = spaces.Discrete(4)
TINY_POLICY = dict(
    features_extractor_class=mmrl.MultimodalExtractor,
    features_extractor_kwargs=dict(text_encoder="bag", fusion="concat", features_dim=32, image_channels=(4, 8, 8)),
    net_arch=[16],
)


def transition_ids(step: int) -> np.ndarray:
    """A unique id per transition (step, env), written into the text observation so samples can be traced back."""
    return step * N_ENVS + np.arange(N_ENVS)


def random_batch(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return dict(
        rewards=rng.normal(size=(N_STEPS, N_ENVS)).astype(np.float32),
        values=rng.normal(size=(N_STEPS, N_ENVS)).astype(np.float32),
        log_probs=-rng.random((N_STEPS, N_ENVS)).astype(np.float32),
        episode_starts=rng.random((N_STEPS, N_ENVS)) < 0.2,
        actions=rng.integers(ACTIONS.n, size=(N_STEPS, N_ENVS)),
        images=rng.integers(0, 256, size=(N_STEPS, N_ENVS, 3, 4, 4), dtype=np.uint8),
        last_values=rng.normal(size=N_ENVS).astype(np.float32),
        last_dones=rng.random(N_ENVS) < 0.3,
    )


def fill(buffer: DictRolloutBuffer, batch: dict[str, np.ndarray], tensors: bool) -> None:
    for step in range(N_STEPS):
        text = np.repeat(transition_ids(step)[:, None], 5, axis=1)
        obs = {"image": batch["images"][step], "text": text}
        args = (obs, batch["actions"][step], batch["rewards"][step], batch["episode_starts"][step])
        if tensors:
            obs = {k: torch.as_tensor(v) for k, v in obs.items()}
            args = (obs, *(torch.as_tensor(a) for a in args[1:]))
        buffer.add(*args, torch.as_tensor(batch["values"][step]).reshape(-1, 1), torch.as_tensor(batch["log_probs"][step]))
    dones = batch["last_dones"]
    buffer.compute_returns_and_advantage(torch.as_tensor(batch["last_values"]), torch.as_tensor(dones) if tensors else dones)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gamma, gae_lambda", [(0.99, 0.95), (0.5, 1.0), (0.9, 0.0)])
def test_gae_matches_sb3(seed: int, gamma: float, gae_lambda: float) -> None:
    batch = random_batch(seed)
    reference = DictRolloutBuffer(N_STEPS, SPACE, ACTIONS, "cpu", gae_lambda=gae_lambda, gamma=gamma, n_envs=N_ENVS)
    device = DeviceDictRolloutBuffer(N_STEPS, SPACE, ACTIONS, "cpu", gae_lambda=gae_lambda, gamma=gamma, n_envs=N_ENVS)
    fill(reference, batch, tensors=False)
    fill(device, batch, tensors=True)
    assert isinstance(device.advantages, torch.Tensor) and device.advantages.device == torch.device("cpu")
    np.testing.assert_allclose(device.advantages.numpy(), reference.advantages, rtol=0, atol=1e-5)
    np.testing.assert_allclose(device.returns, reference.returns, rtol=0, atol=1e-5)
    np.testing.assert_allclose(device.values, reference.values, rtol=0, atol=0)


@pytest.mark.parametrize("batch_size", [32, 50, None])
def test_get_covers_every_transition_once_per_epoch(batch_size: int | None) -> None:
    batch = random_batch(0)
    buffer = DeviceDictRolloutBuffer(N_STEPS, SPACE, ACTIONS, "cpu", gae_lambda=0.95, gamma=0.99, n_envs=N_ENVS)
    fill(buffer, batch, tensors=True)
    total = N_STEPS * N_ENVS
    for _epoch in range(2):
        seen = []
        for sample in buffer.get(batch_size):
            size = len(sample.actions)
            assert size == min(batch_size or total, total - len(seen))
            assert sample.observations["image"].dtype == torch.uint8 and sample.observations["image"].shape == (size, 3, 4, 4)
            assert sample.observations["text"].dtype == torch.int64 and sample.observations["text"].shape == (size, 5)
            assert sample.actions.dtype == torch.float32 and sample.actions.shape == (size, 1)
            for field in ("old_values", "old_log_prob", "advantages", "returns"):
                value = getattr(sample, field)
                assert value.dtype == torch.float32 and value.shape == (size,), field
            ids = sample.observations["text"][:, 0].numpy()
            step, env = ids // N_ENVS, ids % N_ENVS
            # every field of a sample belongs to the transition its observation came from
            np.testing.assert_array_equal(sample.observations["image"].numpy(), batch["images"][step, env])
            np.testing.assert_array_equal(sample.actions[:, 0].numpy(), batch["actions"][step, env])
            np.testing.assert_array_equal(sample.old_values.numpy(), batch["values"][step, env])
            np.testing.assert_array_equal(sample.advantages.numpy(), buffer.advantages.numpy()[step, env])
            seen.extend(ids.tolist())
        assert sorted(seen) == list(range(total))


def test_rollout_buffer_refuses_misuse() -> None:
    buffer = DeviceDictRolloutBuffer(N_STEPS, SPACE, ACTIONS, "cpu", n_envs=N_ENVS)
    with pytest.raises(RuntimeError, match="fill it before get"):
        next(buffer.get(8))
    with pytest.raises(ValueError, match="Dict observation space"):
        DeviceDictRolloutBuffer(N_STEPS, SPACE["image"], ACTIONS, "cpu", n_envs=N_ENVS)


def test_replay_buffer_samples_whole_transitions_like_sb3() -> None:
    rng = np.random.default_rng(0)
    device = DeviceDictReplayBuffer(64, SPACE, ACTIONS, "cpu", n_envs=N_ENVS)
    reference = DictReplayBuffer(64, SPACE, ACTIONS, "cpu", n_envs=N_ENVS)
    for step in range(12):  # 12 * 8 > 64: the buffer wraps around
        ids = transition_ids(step)
        obs = {"image": rng.integers(0, 256, (N_ENVS, 3, 4, 4), dtype=np.uint8), "text": np.repeat(ids[:, None], 5, 1)}
        next_obs = {"image": obs["image"], "text": obs["text"] + 1}
        action, reward = ids % ACTIONS.n, ids.astype(np.float32)
        done, timeout = ids % 3 == 0, ids % 6 == 0
        device.add({k: torch.as_tensor(v) for k, v in obs.items()}, {k: torch.as_tensor(v) for k, v in next_obs.items()},
                   torch.as_tensor(action), torch.as_tensor(reward), torch.as_tensor(done), torch.as_tensor(timeout))  # fmt: skip
        reference.add(obs, next_obs, action, reward, done, [{"TimeLimit.truncated": bool(t)} for t in timeout])
    assert device.full and device.pos == reference.pos and device.size() == reference.size()
    sample, expected = device.sample(256), reference.sample(256)
    for field in ("actions", "dones", "rewards"):
        got, want = getattr(sample, field), getattr(expected, field)
        assert got.dtype == want.dtype and got.shape == want.shape, field
    for key in SPACE.spaces:
        for got, want in ((sample.observations, expected.observations), (sample.next_observations, expected.next_observations)):
            assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
    ids = sample.observations["text"][:, 0].numpy()
    assert ids.min() >= 4 * N_ENVS  # the first 4 steps were overwritten
    np.testing.assert_array_equal(sample.next_observations["text"][:, 0].numpy(), ids + 1)
    np.testing.assert_array_equal(sample.actions[:, 0].numpy(), ids % ACTIONS.n)
    np.testing.assert_array_equal(sample.rewards[:, 0].numpy(), ids)
    # SB3: a time-limit end is stored as done but sampled as not done, so DQN bootstraps through it
    np.testing.assert_array_equal(sample.dones[:, 0].numpy(), ((ids % 3 == 0) & (ids % 6 != 0)).astype(np.float32))


def test_replay_buffer_device_setter_moves_storage() -> None:
    buffer = DeviceDictReplayBuffer(16, SPACE, ACTIONS, "cpu", n_envs=2)
    buffer.device = "cpu"
    assert buffer.observations["image"].device == torch.device("cpu") and buffer.device == torch.device("cpu")


# ----------------------------------------------------------------------------- agents
def tensor_env(num_envs: int = 8, seed: int = 0, device: str = "cpu") -> mmrl.core.adapters.SB3VecEnv:
    return mmrl.make_vec(ENV_ID, num_envs=num_envs, device=device, seed=seed, as_tensors=True, **EASY_RECOMMEND)


def held_out_obs(count: int = 64) -> dict[str, np.ndarray]:
    obs = mmrl.make_vec(ENV_ID, num_envs=count, seed=123, **EASY_RECOMMEND).reset()
    return obs


def test_fast_ppo_learn_save_load_round_trip(tmp_path: Path) -> None:
    model = FastPPO("MultiInputPolicy", tensor_env(), seed=0, n_steps=16, batch_size=64, n_epochs=2, policy_kwargs=TINY_POLICY)
    model.learn(8 * 16 * 3)
    assert isinstance(model.rollout_buffer, DeviceDictRolloutBuffer)
    assert model.rollout_buffer.observations["image"].dtype == torch.uint8
    assert model.num_timesteps == 8 * 16 * 3
    assert len(model.ep_info_buffer) > 0 and {"r", "l"} <= set(model.ep_info_buffer[0])
    obs = held_out_obs()
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "fast_ppo")

    loaded = FastPPO.load(tmp_path / "fast_ppo", env=tensor_env(seed=1))
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    loaded.learn(8 * 16, reset_num_timesteps=False)  # and it keeps training
    assert loaded.num_timesteps == 8 * 16 * 4
    # the zip is SB3's format: stock PPO loads it (without an env) and acts the same
    np.testing.assert_array_equal(PPO.load(tmp_path / "fast_ppo").predict(obs, deterministic=True)[0], actions)


def test_fast_dqn_learn_save_load_round_trip(tmp_path: Path) -> None:
    model = FastDQN(
        "MultiInputPolicy", tensor_env(), seed=0, buffer_size=2_000, learning_starts=64, batch_size=32,
        train_freq=1, target_update_interval=64, policy_kwargs=TINY_POLICY,
    )  # fmt: skip
    model.learn(800)
    assert isinstance(model.replay_buffer, DeviceDictReplayBuffer)
    assert model.replay_buffer.size() == 800 // 8 and model._n_updates > 0
    assert len(model.ep_info_buffer) > 0 and model._episode_num >= len(model.ep_info_buffer)
    obs = held_out_obs()
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "fast_dqn")
    model.save_replay_buffer(tmp_path / "replay")

    loaded = FastDQN.load(tmp_path / "fast_dqn", env=tensor_env(seed=1))
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    loaded.load_replay_buffer(tmp_path / "replay")
    assert isinstance(loaded.replay_buffer, DeviceDictReplayBuffer) and loaded.replay_buffer.size() == 100
    loaded.learn(80, reset_num_timesteps=False)
    np.testing.assert_array_equal(DQN.load(tmp_path / "fast_dqn").predict(obs, deterministic=True)[0], actions)


def test_time_limit_bootstrap_adds_discounted_value_of_the_final_observation() -> None:
    """Envs cut off by the time limit get ``reward + gamma * V(final obs)``; terminated ones get nothing."""
    model = FastPPO("MultiInputPolicy", tensor_env(), seed=0, n_steps=16, batch_size=64, gamma=0.9, policy_kwargs=TINY_POLICY)
    obs = {k: torch.as_tensor(v) for k, v in held_out_obs(3).items()}
    info = {"done_index": torch.tensor([1, 5, 6]), "final_observation": obs}
    truncated = torch.zeros(8, dtype=torch.bool)
    truncated[[5, 6]] = True  # row 1 terminated, rows 5 and 6 truncated
    rewards = torch.arange(8, dtype=torch.float32)
    with torch.no_grad():
        values = model.policy.predict_values(obs).flatten()
    out = model._bootstrap_time_limits(rewards, truncated, info)
    expected = rewards.clone()
    expected[5] += 0.9 * values[1]
    expected[6] += 0.9 * values[2]
    torch.testing.assert_close(out, expected)


def same_setup(cls: type, as_tensors: bool, **kwargs: object):
    """A model on 8 envs of easy Recommend cut at 4 steps (so that time-limit truncations are frequent)."""
    env = mmrl.make_vec(ENV_ID, num_envs=8, seed=0, as_tensors=as_tensors, max_steps=4, **EASY_RECOMMEND)
    return cls("MultiInputPolicy", env, seed=0, policy_kwargs=TINY_POLICY, **kwargs)


def test_one_ppo_iteration_equals_stock_ppo() -> None:
    """Same seed: FastPPO collects the very same rollout as stock PPO (same actions, same bootstrapped rewards,
    same GAE) and, with one full-batch minibatch (so minibatch order cannot matter), takes the same update."""
    settings = dict(n_steps=32, batch_size=256, n_epochs=2, gamma=0.9, gae_lambda=0.95)
    fast, stock = same_setup(FastPPO, True, **settings), same_setup(PPO, False, **settings)
    for model in (fast, stock):
        model.set_random_seed(0)  # the global generators, as each model's construction left them
        model.learn(256)
    fast_buffer, stock_buffer = fast.rollout_buffer, stock.rollout_buffer
    # stock's get() flattened its arrays env-major ([n_envs * n_steps]); the device buffer is [n_steps, n_envs]
    def env_major(array: np.ndarray) -> np.ndarray:
        return np.swapaxes(array, 0, 1).reshape(-1, *array.shape[2:])

    np.testing.assert_array_equal(env_major(fast_buffer.observations["text"].numpy()), stock_buffer.observations["text"])
    np.testing.assert_array_equal(env_major(fast_buffer.actions.numpy()), stock_buffer.actions)
    assert stock_buffer.episode_starts.sum() > 8, "the setup should have truncated episodes"
    np.testing.assert_allclose(fast_buffer.rewards.numpy(), stock_buffer.rewards, atol=1e-5)  # includes gamma * V(final)
    np.testing.assert_allclose(env_major(fast_buffer.advantages.numpy()), stock_buffer.advantages.reshape(-1), atol=1e-4)
    np.testing.assert_allclose(env_major(fast_buffer.returns), stock_buffer.returns.reshape(-1), atol=1e-4)
    for (name, a), (_, b) in zip(fast.policy.state_dict().items(), stock.policy.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3, msg=name)
    assert fast.ep_info_buffer and [e["r"] for e in fast.ep_info_buffer] == [e["r"] for e in stock.ep_info_buffer]


def test_dqn_collects_the_same_transitions_as_stock_dqn() -> None:
    """Greedy from the start and no updates: FastDQN stores exactly the transitions stock DQN stores, terminal
    observations and time-limit flags included (DQN.train, which samples them, is SB3's own)."""
    settings = dict(buffer_size=400, learning_starts=0, gradient_steps=0, exploration_initial_eps=0.0, exploration_final_eps=0.0)
    fast, stock = same_setup(FastDQN, True, **settings), same_setup(DQN, False, **settings)
    for model in (fast, stock):
        model.set_random_seed(0)
        model.learn(8 * 20)
    fast_buffer, stock_buffer = fast.replay_buffer, stock.replay_buffer
    assert fast_buffer.pos == stock_buffer.pos == 20
    for key in ("image", "text"):
        np.testing.assert_array_equal(fast_buffer.observations[key][:20].numpy(), stock_buffer.observations[key][:20])
        np.testing.assert_array_equal(fast_buffer.next_observations[key][:20].numpy(), stock_buffer.next_observations[key][:20])
    for field in ("actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(fast_buffer, field)[:20].numpy(), getattr(stock_buffer, field)[:20], err_msg=field)
    assert stock_buffer.timeouts[:20].sum() > 0


@pytest.mark.parametrize("cls", [FastPPO, FastDQN])
def test_a_numpy_env_is_refused_with_a_clear_error(cls: type) -> None:
    numpy_env = mmrl.make_vec(ENV_ID, num_envs=4, seed=0, **EASY_RECOMMEND)
    kwargs = dict(n_steps=16, batch_size=64) if cls is FastPPO else dict(buffer_size=1_000, learning_starts=0)
    with pytest.raises(TypeError, match=r"mmrl\.make_vec\(.*as_tensors=True\)"):
        cls("MultiInputPolicy", numpy_env, policy_kwargs=TINY_POLICY, **kwargs)
    model = cls("MultiInputPolicy", tensor_env(4), policy_kwargs=TINY_POLICY, **kwargs)
    with pytest.raises(TypeError, match="as_tensors=True"):  # set_env to a numpy env: refused when collecting
        model.set_env(numpy_env)
        model.learn(64)


# ----------------------------------------------------------------------------- learning
def train(device_resident: bool, seed: int, total_timesteps: int) -> float:
    """The default training config (easy Recommend, PPO + FiLM), stock or device-resident; the held-out return."""
    overrides = [f"seed={seed}", f"total_timesteps={total_timesteps}", f"algo.device_resident={device_resident}"]
    return train_and_evaluate(compose_config(overrides), episodes=500)


@pytest.fixture(scope="module")
def gap() -> tuple[float, float]:
    config = compose_config([])
    return reference_return("random", config, episodes=500), reference_return("oracle", config, episodes=500)


def share(value: float, gap: tuple[float, float]) -> float:
    random, oracle = gap
    return (value - random) / (oracle - random)


class Recorder(KVWriter):
    """Keeps every logger dump."""

    def __init__(self) -> None:
        self.dumps: list[dict[str, Any]] = []

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        self.dumps.append(dict(key_values))


@pytest.mark.parametrize("cls", [FastPPO, FastDQN])
def test_logger_and_callbacks_see_episodes(cls: type) -> None:
    """``rollout/ep_rew_mean`` comes from the finished episodes' returns; callbacks run every step."""
    kwargs = dict(n_steps=16, batch_size=64) if cls is FastPPO else dict(buffer_size=1_000, learning_starts=32)
    model = cls("MultiInputPolicy", tensor_env(), seed=0, policy_kwargs=TINY_POLICY, **kwargs)
    recorder = Recorder()
    model.set_logger(Logger(folder=None, output_formats=[recorder]))
    calls: list[int] = []

    class Count(BaseCallback):
        def _on_step(self) -> bool:
            calls.append(self.num_timesteps)
            return True

    model.learn(8 * 16 * 3, callback=Count(), log_interval=1)
    assert calls == list(range(8, 8 * 16 * 3 + 1, 8))
    logged = [d for d in recorder.dumps if "rollout/ep_rew_mean" in d]
    assert logged, recorder.dumps
    returns = [e["r"] for e in model.ep_info_buffer]
    assert logged[-1]["rollout/ep_rew_mean"] == pytest.approx(np.mean(returns))
    assert all(float(r).is_integer() for r in returns)  # Recommend's rewards are clicks: whole numbers


@pytest.mark.slow
def test_fast_ppo_learns_like_stock_ppo(gap: tuple[float, float]) -> None:
    """Same seed, settings and budget as the CI learning test of stock PPO (tests/test_learning.py): FastPPO and
    stock PPO both beat random, by a similar margin. (Slow: two CPU trainings of minutes each; in CI, the exact equality of a
    PPO iteration, test_one_ppo_iteration_equals_stock_ppo, guards against a silent change of the algorithm.)"""
    fast, stock = share(train(True, 0, 120_000), gap), share(train(False, 0, 120_000), gap)
    assert fast >= 0.35 and stock >= 0.35, (fast, stock, gap)
    assert abs(fast - stock) < 0.15, (fast, stock, gap)


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", [FastPPO, FastDQN])
def test_agents_keep_everything_on_cuda(cls: type, tmp_path: Path) -> None:
    kwargs = dict(n_steps=16, batch_size=64) if cls is FastPPO else dict(buffer_size=1_000, learning_starts=64, batch_size=32)
    model = cls("MultiInputPolicy", tensor_env(device="cuda"), seed=0, device="cuda", policy_kwargs=TINY_POLICY, **kwargs)
    model.learn(8 * 16 * 2)
    buffer = model.rollout_buffer if cls is FastPPO else model.replay_buffer
    assert buffer.observations["image"].device.type == "cuda" and buffer.observations["image"].dtype == torch.uint8
    obs = held_out_obs()
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model")
    loaded = cls.load(tmp_path / "model", device="cpu")  # a CUDA-trained zip loads on the CPU
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
