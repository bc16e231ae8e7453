"""``FastPPO`` and ``FastDQN``: SB3's PPO and DQN whose rollouts never leave the device (issue #6).

Both are SB3 subclasses that change two things only: the buffer class (a :mod:`mmrl.rollouts` buffer of torch
tensors on the policy's device, observations kept ``uint8`` / ``int64``) and the collection loop, which steps the
batched env behind ``mmrl.make_vec(..., as_tensors=True)`` with the policy's action tensors and writes its
observation tensors straight into the buffer: no numpy conversion, no per-env Python loop, no host copy per step.
SB3's losses (``PPO.train`` / ``DQN.train``, unchanged), ``learn()``, callbacks, logger and ``save()/load()`` are
inherited as they are, so a ``FastPPO`` zip loads with ``PPO.load`` and the other way round::

    venv = mmrl.make_vec("mmrl/Recommend-v0", num_envs=4096, device="cuda", seed=0, as_tensors=True)
    model = FastPPO("MultiInputPolicy", venv, device="cuda",
                    policy_kwargs=dict(features_extractor_class=mmrl.MultimodalExtractor))
    model.learn(10_000_000)

From the command line they are the same algorithms with a flag: ``python -m mmrl.train algo.device_resident=true``
(``algo=ppo`` or ``algo=dqn``; see :data:`mmrl.agents.builders.DEVICE_RESIDENT`).

What differs from stock SB3, on purpose:

* time-limit bootstrapping (SB3 issue #633) evaluates ``V(terminal_observation)`` of all the envs truncated in a
  step in one batched forward, instead of one forward per env;
* finished episodes' returns and lengths are gathered on the device and appended to ``ep_info_buffer`` once per
  ``collect_rollouts`` call (for PPO once per rollout), not per step; ``rollout/ep_rew_mean`` is the same;
* callbacks see tensors in ``locals``: ``new_obs``, ``rewards``, ``dones`` and ``infos``, which is the batched env's
  info dict (``done_index``, ``final_observation``, ``episode_return`` ...), not a list of per-env dicts;
* sampling uses torch's generator on the device (SB3 uses numpy's); seeded runs are reproducible all the same;
* ``_last_obs`` / ``_last_episode_starts`` (device tensors) are not written into the zip, so a model trained on
  CUDA loads on a CPU-only machine; ``load()`` drops them by default anyway (``force_reset=True``).

FastDQN keeps stock SB3's epsilon-greedy exactly, including its one draw per step for the whole batch (with
probability ``exploration_rate`` every env takes a random action, otherwise every env acts greedily).
"""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.buffers import DictReplayBuffer, DictRolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.type_aliases import RolloutReturn, TrainFreq, TrainFrequencyUnit
from stable_baselines3.common.utils import should_collect_more_steps
from stable_baselines3.common.vec_env import VecEnv
from torch import Tensor

from mmrl.core.batched_env import Info, Observation
from mmrl.rollouts import DeviceDictReplayBuffer, DeviceDictRolloutBuffer, FinishedEpisodes, tensor_batched_env, to_device

#: attributes that hold device tensors or per-process state; not written into the saved zip
_NOT_SAVED = ["_finished_episodes", "_last_obs", "_last_episode_starts", "_last_original_obs"]


def _buffer_class(given: type | None, default: type, stock: type, algorithm: str) -> type:
    """The buffer class to use: ``default`` in place of ``None`` or SB3's stock class (a zip saved by stock SB3)."""
    if given is None or given is stock:
        return default
    if not issubclass(given, default):
        raise ValueError(f"{algorithm} needs a {default.__name__} (or subclass) as its buffer class; got {given.__name__}")
    return given


def _with_final_observations(obs: Observation, info: Info) -> Observation:
    """``obs`` with the rows of envs that just finished replaced by their episode's last observation."""
    done_index = info["done_index"]
    if done_index.numel() == 0:
        return obs
    final = info["final_observation"]
    return {key: value.index_copy(0, done_index, final[key]) for key, value in obs.items()}


class FastPPO(PPO):
    """SB3's PPO with a device-resident rollout buffer filled from an mmrl tensor VecEnv.

    Takes PPO's arguments; ``env`` must be ``mmrl.make_vec(..., as_tensors=True)`` (unwrapped) and the observation
    space a ``Dict``. ``rollout_buffer_class`` defaults to :class:`~mmrl.rollouts.DeviceDictRolloutBuffer`.
    """

    def _setup_model(self) -> None:
        if self.env is not None:
            tensor_batched_env(self.env, type(self).__name__)
        self.rollout_buffer_class = _buffer_class(
            self.rollout_buffer_class, DeviceDictRolloutBuffer, DictRolloutBuffer, type(self).__name__
        )
        super()._setup_model()
        self._finished_episodes = FinishedEpisodes(self._stats_window_size)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), *_NOT_SAVED]

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: DeviceDictRolloutBuffer, n_rollout_steps: int  # type: ignore[override]
    ) -> bool:
        """Fill ``rollout_buffer`` with ``n_rollout_steps`` steps of every env, as SB3's ``collect_rollouts`` does,
        with tensors end to end. :return: False if a callback stopped training."""
        batched = tensor_batched_env(env, type(self).__name__)
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        n_steps = 0
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        callback.on_rollout_start()

        obs = to_device(self._last_obs, self.device)  # type: ignore[arg-type]
        episode_starts = torch.as_tensor(self._last_episode_starts, device=self.device)
        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)
            with torch.no_grad():
                actions, values, log_probs = self.policy(obs)
            new_obs, rewards, terminated, truncated, infos = batched.step(actions)
            env.last_info = infos  # type: ignore[attr-defined]  (what SB3VecEnv.step would have kept)
            dones = terminated | truncated
            self.num_timesteps += env.num_envs

            callback.update_locals(locals())
            if not callback.on_step():
                self._finished_episodes.flush(self.ep_info_buffer)
                return False
            self._finished_episodes.record(infos)
            n_steps += 1

            rewards = self._bootstrap_time_limits(rewards, truncated, infos)
            rollout_buffer.add(obs, actions, rewards, episode_starts, values, log_probs)
            obs = to_device(new_obs, self.device)
            episode_starts = dones.to(self.device)
            self._last_obs, self._last_episode_starts = obs, episode_starts  # type: ignore[assignment]

        with torch.no_grad():
            values = self.policy.predict_values(obs)
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=episode_starts)
        self._finished_episodes.flush(self.ep_info_buffer)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _bootstrap_time_limits(self, rewards: Tensor, truncated: Tensor, info: Info) -> Tensor:
        """``rewards + gamma * V(final observation)`` for the envs cut off by the time limit (SB3 issue #633), all of
        them in one forward. (Picking them out costs one device sync on CUDA, where the env's own ``done_index``
        has just synced; evaluating every finished env instead would cost a forward per step on the CPU.)"""
        rewards = rewards.to(self.device, torch.float32)
        done_index = info["done_index"]
        if done_index.numel() == 0:
            return rewards
        rows = torch.nonzero(truncated.index_select(0, done_index)).flatten()  # positions in done_index
        if rows.numel() == 0:
            return rewards
        final = {key: value.index_select(0, rows) for key, value in info["final_observation"].items()}
        with torch.no_grad():
            terminal_values = self.policy.predict_values(to_device(final, self.device)).reshape(-1)
        return rewards.index_add(0, done_index.index_select(0, rows).to(self.device), self.gamma * terminal_values)


class FastDQN(DQN):
    """SB3's DQN with a device-resident replay buffer filled from an mmrl tensor VecEnv.

    Takes DQN's arguments; ``env`` must be ``mmrl.make_vec(..., as_tensors=True)`` (unwrapped) and the observation
    space a ``Dict``. ``replay_buffer_class`` defaults to :class:`~mmrl.rollouts.DeviceDictReplayBuffer`.
    """

    def _setup_model(self) -> None:
        if self.env is not None:
            tensor_batched_env(self.env, type(self).__name__)
        self.replay_buffer_class = _buffer_class(
            self.replay_buffer_class, DeviceDictReplayBuffer, DictReplayBuffer, type(self).__name__
        )
        super()._setup_model()
        self._finished_episodes = FinishedEpisodes(self._stats_window_size)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), *_NOT_SAVED]

    def _sample_device_action(self, learning_starts: int, n_envs: int) -> Tensor:
        """SB3's ``_sample_action`` + ``DQN.predict`` for a Discrete space, as one tensor of actions on the device:
        uniform before ``learning_starts``; afterwards, with probability ``exploration_rate`` (one draw for the
        batch, as stock SB3) uniform, else greedy."""
        warmup = self.num_timesteps < learning_starts
        if warmup or np.random.rand() < self.exploration_rate:
            return torch.randint(int(self.action_space.n), (n_envs,), device=self.device)  # type: ignore[attr-defined]
        with torch.no_grad():
            return self.policy._predict(to_device(self._last_obs, self.device), deterministic=False)  # type: ignore[arg-type]

    def collect_rollouts(  # type: ignore[override]
        self,
        env: VecEnv,
        callback: BaseCallback,
        train_freq: TrainFreq,
        replay_buffer: DeviceDictReplayBuffer,
        action_noise: ActionNoise | None = None,
        learning_starts: int = 0,
        log_interval: int | None = None,
    ) -> RolloutReturn:
        """SB3's off-policy ``collect_rollouts`` with tensors end to end: step, store, ``_on_step``, log."""
        batched = tensor_batched_env(env, type(self).__name__)
        self.policy.set_training_mode(False)
        num_collected_steps, num_collected_episodes = 0, 0
        assert train_freq.frequency > 0, "Should at least collect one step or episode."
        if env.num_envs > 1:
            assert train_freq.unit == TrainFrequencyUnit.STEP, "You must use only one env when doing episodic training."
        callback.on_rollout_start()
        continue_training = True
        while should_collect_more_steps(train_freq, num_collected_steps, num_collected_episodes):
            actions = self._sample_device_action(learning_starts, env.num_envs)
            new_obs, rewards, terminated, truncated, infos = batched.step(actions)
            env.last_info = infos  # type: ignore[attr-defined]
            dones = terminated | truncated
            self.num_timesteps += env.num_envs
            num_collected_steps += 1

            callback.update_locals(locals())
            if not callback.on_step():
                self._finished_episodes.flush(self.ep_info_buffer)
                return RolloutReturn(num_collected_steps * env.num_envs, num_collected_episodes, continue_training=False)
            finished = self._finished_episodes.record(infos)

            # truncated is already false where terminated: it is SB3's TimeLimit.truncated
            next_obs = _with_final_observations(new_obs, infos)
            replay_buffer.add(self._last_obs, next_obs, actions, rewards, dones, truncated)  # type: ignore[arg-type]
            self._last_obs = new_obs  # type: ignore[assignment]

            self._update_current_progress_remaining(self.num_timesteps, self._total_timesteps)
            self._on_step()
            if finished:
                num_collected_episodes += finished
                before, self._episode_num = self._episode_num, self._episode_num + finished
                if log_interval is not None and self._episode_num // log_interval > before // log_interval:
                    self._finished_episodes.flush(self.ep_info_buffer)
                    self.dump_logs()
        self._finished_episodes.flush(self.ep_info_buffer)
        callback.on_rollout_end()
        return RolloutReturn(num_collected_steps * env.num_envs, num_collected_episodes, continue_training)


__all__ = ["FastDQN", "FastPPO"]
