"""Shared test setup: one thread (2-core machines), registered envs, small helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mmrl  # noqa: F401  (registers the env ids)

torch.set_num_threads(1)

ENV_IDS = sorted(mmrl.ENV_CLASSES)


def scripted_actions(obs_text: np.ndarray, step: int, n: int) -> np.ndarray:
    """Deterministic actions that depend on the observation, so diverging observations diverge actions."""
    return ((obs_text.sum(axis=-1) + step) % n).astype(np.int64)


@pytest.fixture(params=ENV_IDS)
def env_id(request: pytest.FixtureRequest) -> str:
    return request.param
