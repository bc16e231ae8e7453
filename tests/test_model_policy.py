"""``mmrl.agents.model_policy.ModelPolicy`` acts exactly as ``model.predict`` does, without leaving the device.

Each model (PPO, DQN, sb3-contrib's RecurrentPPO, untrained so its actions are varied) steps a short Recommend
(4 steps at most, so rows finish and restart mid-run) twice on the same seeds: once through the adapter,
once through ``model.predict`` on numpy copies of the observations with its recurrent state carried as SB3's
docs show. Every step's actions must be equal, greedy and sampled (the generators seeded alike before each run).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from stable_baselines3 import DQN, PPO

import mmrl
from mmrl.agents.model_policy import ModelPolicy
from tests.conftest import env_options

ENV_ID = "mmrl/Recommend-v0"
NUM_ENVS = 6
SEED = 77
EXTRACTOR = dict(
    features_extractor_class=mmrl.MultimodalExtractor,
    features_extractor_kwargs=dict(text_encoder="bag", fusion="concat", features_dim=32, image_channels=(4, 8, 8)),
    net_arch=[16],
)


def make_env(**options: object) -> mmrl.BatchedEnv:
    return mmrl.make_batched(ENV_ID, num_envs=NUM_ENVS, **{**env_options("recommend"), "max_steps": 4, **options})


def make_model(name: str):
    venv = mmrl.make_vec(ENV_ID, num_envs=2, seed=0, **env_options("recommend"), max_steps=4)
    if name == "ppo":
        return PPO("MultiInputPolicy", venv, n_steps=8, batch_size=16, seed=0, policy_kwargs=EXTRACTOR)
    if name == "dqn":
        model = DQN("MultiInputPolicy", venv, buffer_size=100, learning_starts=0, seed=0, policy_kwargs=EXTRACTOR)
        model.exploration_rate = 0.5  # both branches of the epsilon-greedy draw happen in a run
        return model
    sb3_contrib = pytest.importorskip("sb3_contrib", reason="sb3-contrib is not installed (pip install -e '.[dev]')")
    policy_kwargs = {**EXTRACTOR, "lstm_hidden_size": 8}
    return sb3_contrib.RecurrentPPO("MultiInputLstmPolicy", venv, n_steps=8, batch_size=16, seed=0, policy_kwargs=policy_kwargs)


def predict_policy(model, deterministic: bool) -> tuple[Callable, Callable, Callable]:
    """The host path the adapter replaces: numpy observations, ``model.predict``, recurrent state carried.
    :returns: ``act``, ``update`` and a function giving the recurrent state after the last step."""
    state = None
    episode_start = np.ones(NUM_ENVS, dtype=bool)

    def act(obs, info):
        nonlocal state
        host = {key: value.cpu().numpy() for key, value in obs.items()}
        actions, state = model.predict(host, state=state, episode_start=episode_start, deterministic=deterministic)
        episode_start[:] = False
        return torch.as_tensor(actions, dtype=torch.int64)

    def update(info, done):
        episode_start[:] = done.cpu().numpy()

    return act, update, lambda: state


def recorded_actions(model, act: Callable, update: Callable, steps: int = 12) -> list[torch.Tensor]:
    """Seed every generator the policies draw from, step the env (rows restart every 4 steps at the latest), return
    each step's actions."""
    torch.manual_seed(0)
    np.random.seed(0)
    model.action_space.seed(0)
    env = make_env()
    obs, info = env.reset(seed=SEED)
    taken: list[torch.Tensor] = []
    for _ in range(steps):
        actions = act(obs, info)
        taken.append(actions.clone())
        obs, _, terminated, truncated, info = env.step(actions)
        update(info, terminated | truncated)
    return taken


@pytest.mark.parametrize("deterministic", [True, False])
@pytest.mark.parametrize("name", ["ppo", "dqn", "recurrent_ppo"])
def test_same_actions_as_model_predict(name: str, deterministic: bool) -> None:
    model = make_model(name)
    adapter = ModelPolicy(model, make_env(), deterministic=deterministic)
    assert adapter.recurrent is (name == "recurrent_ppo")
    got = recorded_actions(model, adapter.act, adapter.update)
    act, update, final_state = predict_policy(model, deterministic)
    want = recorded_actions(model, act, update)
    assert len(got) == len(want)
    for step, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.dtype == torch.int64 and a.device == torch.device("cpu")
        torch.testing.assert_close(a, b, msg=f"step {step}")
    if adapter.recurrent:  # the LSTM state was carried and reset where predict's was (actions may not show it)
        assert adapter.lstm_states is not None
        for ours, theirs in zip(adapter.lstm_states, final_state(), strict=True):
            torch.testing.assert_close(ours, torch.as_tensor(theirs), atol=1e-6, rtol=1e-5)


def test_dqn_explores_at_its_exploration_rate() -> None:
    model = make_model("dqn")
    env = make_env()
    obs, info = env.reset(seed=SEED)
    greedy = ModelPolicy(model, env, deterministic=True).act(obs, info)
    model.exploration_rate = 0.0
    assert torch.equal(ModelPolicy(model, env, deterministic=False).act(obs, info), greedy)
    model.exploration_rate = 1.0
    sampled = torch.stack([ModelPolicy(model, env, deterministic=False).act(obs, info) for _ in range(20)])
    assert not (sampled == greedy).all(), "exploration_rate=1 should give uniform actions"
    assert int(sampled.min()) >= 0 and int(sampled.max()) < env.single_action_space.n


def test_a_mismatched_observation_space_is_refused() -> None:
    model = make_model("ppo")
    with pytest.raises(ValueError, match=r"the model expects image of shape \(3, 32, 32\), the env gives \(3, 64, 64\)"):
        ModelPolicy(model, make_env(image_size=64))
    with pytest.raises(ValueError, match=r"the model reads text with another vocabulary than the env's"):
        ModelPolicy(model, make_env(num_colours=3))  # the same shapes, other words


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_actions_stay_on_the_cuda_device() -> None:
    model = PPO.load(_saved(make_model("ppo")), device="cuda")
    env = mmrl.make_batched(ENV_ID, num_envs=NUM_ENVS, device="cuda", **env_options("recommend"))
    policy = ModelPolicy(model, env)
    obs, info = env.reset(seed=SEED)
    actions = policy.act(obs, info)
    assert actions.device.type == "cuda" and actions.dtype == torch.int64
    host = {key: value.cpu().numpy() for key, value in obs.items()}
    np.testing.assert_array_equal(actions.cpu().numpy(), model.predict(host, deterministic=True)[0])


def _saved(model) -> str:
    import tempfile

    path = tempfile.mkdtemp() + "/model.zip"
    model.save(path)
    return path
