"""Summary statistics of evaluation episodes: mean, std and 95% confidence interval, plus each env's task metrics.

Task metrics are env-specific (Recommend: click-through rate, revenue, regret vs the oracle): each env module
declares its own :class:`TaskMetrics` as its class's ``task_metrics``, so the evaluator itself stays env-generic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mmrl.episodes import EpisodeStats

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
_Z975 = 1.959963984540054
CI_METHOD = "student-t, 95%, two-sided"


def t_quantile_975(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof`` degrees of freedom (table to 30, Cornish-Fisher beyond)."""
    if dof < 1:
        return math.nan
    if dof <= len(_T975):
        return _T975[dof - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def summarize(values: np.ndarray) -> dict[str, float | int | list[float]]:
    """``{"mean", "std", "ci95": [low, high], "min", "max", "n"}`` of per-episode ``values``.

    ``std`` is the sample standard deviation (ddof=1, 0 for one episode); the interval is the mean's,
    from Student's t (``CI_METHOD``); one episode gives ``[mean, mean]``."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("summarize() needs at least one value")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    half = t_quantile_975(x.size - 1) * std / math.sqrt(x.size) if x.size > 1 else 0.0
    return {
        "mean": mean,
        "std": std,
        "ci95": [mean - half, mean + half],
        "min": float(x.min()),
        "max": float(x.max()),
        "n": int(x.size),
    }


def gap_share(value: float, random: float, reference: float | None) -> float | None:
    """Where ``value`` lies from ``random`` (0) to ``reference`` (1); ``None`` without a reference or a gap."""
    return None if reference is None or reference == random else (value - random) / (reference - random)


@dataclass(frozen=True)
class TaskMetrics:
    """An env's own metrics: which info entries to add up per episode, and how to turn them into numbers.

    :param sum_keys: per-step info entries summed over each episode (``run_episodes(sum_keys=...)``).
    :param compute: ``EpisodeStats -> {name: number or summary dict}``.
    :param labels: ``name -> human-readable label`` for tables.
    """

    sum_keys: tuple[str, ...]
    compute: Callable[[EpisodeStats], dict[str, object]]
    labels: dict[str, str]


def task_metrics_for(env: object) -> TaskMetrics | None:
    """The task metrics of ``env`` (a batched env: its ``task_metrics``), or ``None`` when it declares none."""
    return getattr(env, "task_metrics", None)


def task_labels(env_id: str | None = None) -> dict[str, str]:
    """``name -> label`` of every registered env's task metrics (for tables of metrics read back from files); the
    labels of ``env_id``'s env win where two envs label one name differently (``episode_length``: steps per episode,
    per shift, per session)."""
    from mmrl.registration import ENV_CLASSES

    labels: dict[str, str] = {}
    own = ENV_CLASSES.get(env_id) if env_id is not None else None
    for env_class in [*ENV_CLASSES.values(), *([own] if own is not None else [])]:
        if env_class.task_metrics is not None:
            labels.update(env_class.task_metrics.labels)
    return labels


def episode_metrics(stats: EpisodeStats, task: TaskMetrics | None) -> dict[str, object]:
    """``{"episode_return": summary, "episode_length": summary, "task": {...}}`` of one policy's episodes."""
    return {
        "episode_return": summarize(stats.returns),
        "episode_length": summarize(stats.lengths),
        "task": task.compute(stats) if task is not None else {},
    }
