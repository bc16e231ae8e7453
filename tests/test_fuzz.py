"""Property-based fuzzing of the built-in envs over random valid options, batch sizes and actions (hypothesis):
spaces, finite rewards, and row 0 of a batch replaying the same episode alone. A small budget by default; the
``slow`` version tries many more configurations (BENCHMARKS.md records a 10^7-step run of benchmarks/fuzz.py)."""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the dev extra")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from mmrl.testing import fuzz_steps, random_options  # noqa: E402

ENVS = ["mmrl/Recommend-v0", "mmrl/Navigate-v0", "mmrl/Diagnose-v0", "mmrl/Tutor-v0"]  # the built-in envs
CASES = st.tuples(st.sampled_from(ENVS), st.integers(0, 2**31 - 1), st.integers(1, 6))


def _check(case: tuple[str, int, int]) -> None:
    env_id, seed, num_envs = case
    options = random_options(env_id, np.random.default_rng(seed))
    fuzz_steps(env_id, options, num_envs=num_envs, steps=12, seed=seed)


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(CASES)
def test_random_valid_options_step_within_their_spaces(case: tuple[str, int, int]) -> None:
    _check(case)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CASES)
def test_many_random_valid_options_step_within_their_spaces(case: tuple[str, int, int]) -> None:
    _check(case)
