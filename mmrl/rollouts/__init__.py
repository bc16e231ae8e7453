"""Device-resident rollout and replay buffers for the fast agents (:mod:`mmrl.agents.fast`, issue #6)."""

from mmrl.rollouts.replay_buffer import DeviceDictReplayBuffer
from mmrl.rollouts.rollout_buffer import DeviceDictRolloutBuffer
from mmrl.rollouts.tensor_env import FinishedEpisodes, tensor_batched_env, to_device

__all__ = ["DeviceDictReplayBuffer", "DeviceDictRolloutBuffer", "FinishedEpisodes", "tensor_batched_env", "to_device"]
