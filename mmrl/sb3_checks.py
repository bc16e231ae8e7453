"""Checks for stock Stable-Baselines3 setups that cannot work with image + text observations.

Two stock SB3 paths fail on mmrl's ``Dict(image=uint8[3, H, W], text=int64[L])`` observations, far from the cause:

- ``MultiInputPolicy`` without a ``features_extractor_class`` encodes every image key with ``CombinedExtractor``'s
  NatureCNN, whose 8x8/4, 4x4/2, 3x3/1 convolutions need 36 px or more: at 32 px the model's constructor raises
  ``RuntimeError: ... Kernel size can't be greater than actual input size``.
- ``VecNormalize`` normalises every key of a Dict observation by default, the token ids too (it keeps their space,
  an int64 Box, so nothing fails at construction); a text encoder then indexes its embedding with negative or
  fractional "ids": an ``IndexError``, or on CUDA a device-side assert.

:class:`~mmrl.MultimodalExtractor` checks the ids it gets on its first forwards and names the fix; :func:`check_sb3_setup`
catches both before a model is built. mmrl does not patch SB3, so a stock model built without either still fails with
SB3's own message (README, "Stock SB3 pitfalls").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.torch_layers import CombinedExtractor
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize

from mmrl.core.spaces import TextSpace
from mmrl.extractors.multimodal import VECNORMALIZE_FIX

#: the smallest side NatureCNN (SB3's default image encoder) accepts
NATURE_CNN_MIN_SIDE = 36


def _wrappers(env: Any) -> list[Any]:
    """``env`` and every VecEnv wrapper under it, outermost first."""
    chain = [env]
    while isinstance(chain[-1], VecEnvWrapper):
        chain.append(chain[-1].venv)
    return chain


def _is_token_space(space: spaces.Space) -> bool:
    """A key of token ids: a TextSpace, or a 1-D integer Box."""
    return isinstance(space, TextSpace) or (
        isinstance(space, spaces.Box) and len(space.shape) == 1 and np.issubdtype(space.dtype, np.integer)
    )


def _sides(space: spaces.Box) -> tuple[int, int]:
    """(H, W) of an image space, channel-first or channel-last (SB3 transposes the latter)."""
    shape = space.shape
    return (shape[1], shape[2]) if is_image_space_channels_first(space) else (shape[0], shape[1])


def check_vec_normalize(env: Any) -> None:
    """Raise ``ValueError`` when a ``VecNormalize`` in ``env``'s wrapper chain normalises a key of token ids."""
    for wrapper in _wrappers(env):
        if not isinstance(wrapper, VecNormalize) or not wrapper.norm_obs:
            continue
        space = wrapper.venv.observation_space
        if not isinstance(space, spaces.Dict):
            continue
        keys = wrapper.norm_obs_keys if wrapper.norm_obs_keys is not None else list(space.spaces)
        tokens = [key for key in keys if _is_token_space(space[key])]
        if tokens:
            raise ValueError(f"VecNormalize normalises the token ids of {tokens} (norm_obs_keys={keys}). {VECNORMALIZE_FIX}")


def check_sb3_setup(env: VecEnv | Any, policy_kwargs: Mapping[str, Any] | None = None) -> None:
    """Raise ``ValueError`` naming the fix when ``MultiInputPolicy`` with ``policy_kwargs`` cannot work on ``env``.

    :param env: the env or VecEnv (with its wrappers) the model will train on.
    :param policy_kwargs: the model's ``policy_kwargs`` (``None``: SB3's defaults, i.e. ``CombinedExtractor``).
    """
    check_vec_normalize(env)
    extractor = (policy_kwargs or {}).get("features_extractor_class", CombinedExtractor)
    space = env.observation_space
    if not (isinstance(extractor, type) and issubclass(extractor, CombinedExtractor)) or not isinstance(space, spaces.Dict):
        return
    # The keys CombinedExtractor sends to NatureCNN: uint8 images, by SB3's own test.
    small = {
        key: tuple(sub.shape)
        for key, sub in space.spaces.items()
        if is_image_space(sub, check_channels=False) and min(_sides(sub)) < NATURE_CNN_MIN_SIDE
    }
    if small:
        raise ValueError(
            f"SB3's CombinedExtractor (the default of MultiInputPolicy) encodes {small} with NatureCNN, whose "
            f"convolutions need images of at least {NATURE_CNN_MIN_SIDE} px (else: \"Kernel size can't be greater than "
            f"actual input size\"). Use policy_kwargs=dict(features_extractor_class=mmrl.MultimodalExtractor) (its "
            f"default 'cnn' encoder works from 16 px) or make the env with image_size >= {NATURE_CNN_MIN_SIDE}"
        )
