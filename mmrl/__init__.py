"""mmrl: reinforcement learning on multimodal (image + text) decision tasks.

``import mmrl`` registers the environments (``mmrl/Recommend-v0``, ...) with Gymnasium.
"""

from mmrl.core import BatchedEnv, TextSpace, Vocabulary
from mmrl.extractors.multimodal import MultimodalExtractor
from mmrl.registration import ENV_CLASSES, make_batched, make_vec, register_env, register_envs
from mmrl.sb3_checks import check_sb3_setup

__version__ = "0.1.0"

register_envs()

__all__ = ["BatchedEnv", "ENV_CLASSES", "MultimodalExtractor", "TextSpace", "Vocabulary", "check_sb3_setup", "make_batched", "make_vec", "register_env", "register_envs"]
