"""Bad input at the env faces fails at once, naming the bad value and what was expected (issue #16's classes).

Catalogue files are covered in tests/test_recommend.py, the command lines in tests/test_train.py and
tests/test_evaluate.py, env options in each env's tests, actions and steps out of order in the engine contract
(mmrl.testing.check_bad_input).
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest

import mmrl

ENV = "mmrl/Recommend-v0"


def ready(env: gym.Env) -> gym.Env:
    env.reset(seed=0)
    return env


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: ready(gym.make(ENV)).step(True), ValueError, r"invalid action True \(bool\)"),
        (lambda: gym.make(ENV).reset(options={"bogus": 1}), ValueError, r"takes no options; got \['bogus'\]"),
        (lambda: gym.make_vec(ENV, num_envs=2).reset(options={"bogus": 1}), ValueError, r"takes no options; got \['bogus'\]"),
        (lambda: mmrl.make_vec(ENV, num_envs=2, as_tensors="no"), TypeError, "as_tensors must be True or False; got 'no'"),
        (lambda: gym.make_vec(ENV, num_envs=4).reset(seed=2**63 - 2), ValueError, r"seed must be an integer in \[0, \d+\] for 4 instances"),
        (lambda: mmrl.make_batched(ENV, num_envs=2).reset(seed=-1), ValueError, r"got -1"),
        (lambda: mmrl.make_batched(ENV, num_envs=2, compile="yes"), TypeError, "compile must be True or False"),
        (lambda: mmrl.make_batched(ENV, image_size=4096), ValueError, r"image_size must be in \[16, 512\]; got 4096"),
        (lambda: mmrl.make_batched(ENV, catalog="/nowhere", num_categories=4), ValueError, "replaces the procedural catalogue"),
    ],
    ids=["bool action", "reset options", "vector reset options", "as_tensors", "seed overflow", "negative seed",
         "compile flag", "huge image", "catalogue with a catalogue size"],
)  # fmt: skip
def test_bad_input_names_the_value(call: Callable[[], object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_a_vector_reset_mask_is_still_an_option() -> None:
    venv = gym.make_vec(ENV, num_envs=4)
    first, _ = venv.reset(seed=0)
    again, _ = venv.reset(options={"reset_mask": np.array([False, True, False, True])})
    assert np.array_equal(first["text"][0], again["text"][0]) and np.array_equal(first["text"][2], again["text"][2])
