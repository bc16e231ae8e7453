"""The engine: batched env base, spaces and vocabulary, counter-based RNG, sprite renderer, adapters."""

from mmrl.core.batched_env import BatchedEnv
from mmrl.core.spaces import TextSpace, Vocabulary

__all__ = ["BatchedEnv", "TextSpace", "Vocabulary"]
