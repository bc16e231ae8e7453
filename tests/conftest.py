"""Shared test setup: one thread (2-core machines), registered envs, small helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mmrl  # noqa: F401  (registers the env ids)
from mmrl.testing import scripted_actions  # noqa: F401  (shared by test modules)

torch.set_num_threads(1)

ENV_IDS = sorted(mmrl.ENV_CLASSES)


@pytest.fixture(params=ENV_IDS)
def env_id(request: pytest.FixtureRequest) -> str:
    return request.param


def env_options(name: str) -> dict:
    """The options of ``configs/env/<name>.yaml``: the env settings the CLI runs, for tests that build the env
    themselves (so the settings are not copied into the tests)."""
    from importlib.resources import files

    import yaml

    text = files("mmrl.configs").joinpath("env", f"{name}.yaml").read_text(encoding="utf-8")
    return dict(yaml.safe_load(text).get("options") or {})
