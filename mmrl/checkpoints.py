"""Atomic training checkpoints and resuming from the last good one.

A checkpoint taken at ``N`` env steps is up to three files in ``<run_dir>/checkpoints/``:

- ``step_<N>.state.pkl``: RNG states (python, numpy, torch, CUDA, the action space's), the training env's
  per-instance seeds and episode counters, and the trainer's own state (e.g. best evaluation so far);
- ``step_<N>.replay.pkl``: the replay buffer (off-policy algorithms only);
- ``step_<N>.zip``: the SB3 model (``model.save``: parameters, optimiser state, ``num_timesteps``, schedules).

Each file is written atomically (:func:`mmrl.runs.atomic_write`), the model last, so a ``.zip`` that exists is
complete unless something outside damaged it. Loading walks the checkpoints newest first and skips (with a
warning naming the file) any that fails to load.
"""

from __future__ import annotations

import logging
import pickle
import random
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from mmrl.runs import atomic_write

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d+)\.zip$")


def save_model(model: BaseAlgorithm, path: str | Path) -> Path:
    """``model.save`` to ``path`` (a ``.zip``), atomically."""
    return atomic_write(path, model.save)


@dataclass(frozen=True)
class Checkpoint:
    """The files of the checkpoint taken at ``steps`` env steps."""

    steps: int
    model: Path
    state: Path
    replay_buffer: Path

    @classmethod
    def at(cls, directory: str | Path, steps: int) -> Checkpoint:
        stem = Path(directory) / f"step_{steps:010d}"
        return cls(steps, stem.with_suffix(".zip"), Path(f"{stem}.state.pkl"), Path(f"{stem}.replay.pkl"))

    def files(self) -> tuple[Path, ...]:
        return self.model, self.state, self.replay_buffer


def list_checkpoints(directory: str | Path) -> list[Checkpoint]:
    """Checkpoints in ``directory`` (by their model file), oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    steps = sorted(int(m.group(1)) for p in directory.iterdir() if (m := _NAME.match(p.name)))
    return [Checkpoint.at(directory, s) for s in steps]


def rng_state(model: BaseAlgorithm | None = None) -> dict[str, Any]:
    """States of the python, numpy, torch (and CUDA) generators, and of ``model``'s action space."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    if model is not None:
        state["action_space"] = model.action_space.np_random.bit_generator.state
    return state


def restore_rng_state(state: dict[str, Any], model: BaseAlgorithm | None = None) -> None:
    """Put back what :func:`rng_state` returned (call it after loading the model: loading reseeds)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if model is not None and "action_space" in state:
        model.action_space.np_random.bit_generator.state = state["action_space"]


def save_checkpoint(
    model: BaseAlgorithm, directory: str | Path, extra_state: dict[str, Any] | None = None, keep: int = 3
) -> Checkpoint:
    """Checkpoint ``model`` at its ``num_timesteps``; keep the ``keep`` newest checkpoints.

    :param extra_state: anything picklable to get back on resume (env counters, best evaluation ...).
    """
    checkpoint = Checkpoint.at(directory, model.num_timesteps)
    state = {"num_timesteps": model.num_timesteps, "rng": rng_state(model), "extra": extra_state or {}}
    atomic_write(checkpoint.state, lambda f: pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL))
    if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
        atomic_write(checkpoint.replay_buffer, lambda f: pickle.dump(model.replay_buffer, f, protocol=pickle.HIGHEST_PROTOCOL))
    save_model(model, checkpoint.model)  # last: its presence marks the checkpoint complete
    for old in list_checkpoints(directory)[: -max(keep, 1)]:
        for path in old.files():
            path.unlink(missing_ok=True)
    return checkpoint


@dataclass
class Restored:
    """A model loaded from a checkpoint and the state saved with it."""

    model: BaseAlgorithm
    checkpoint: Checkpoint
    extra_state: dict[str, Any]
    skipped: list[tuple[Path, str]]
    """Newer checkpoints that failed to load, with the reason."""


def load_checkpoint(
    checkpoint: Checkpoint, load_model: Callable[[Path], BaseAlgorithm]
) -> tuple[BaseAlgorithm, dict[str, Any]]:
    """Load one checkpoint: the model (``load_model(path)``), its replay buffer, then its RNG states.

    :raises Exception: whatever fails first (a truncated zip, a missing or unreadable state file ...)."""
    with zipfile.ZipFile(checkpoint.model) as archive:  # a truncated file fails here or in testzip
        bad = archive.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"bad CRC for {bad}")
    with open(checkpoint.state, "rb") as file:
        state = pickle.load(file)
    model = load_model(checkpoint.model)
    if model.num_timesteps != state["num_timesteps"]:
        raise ValueError(f"model is at {model.num_timesteps} steps, state file at {state['num_timesteps']}")
    if isinstance(model, OffPolicyAlgorithm):
        with open(checkpoint.replay_buffer, "rb") as file:
            model.replay_buffer = pickle.load(file)
    restore_rng_state(state["rng"], model)
    return model, state["extra"]


def load_latest_checkpoint(
    directory: str | Path, load_model: Callable[[Path], BaseAlgorithm], skipped: list[tuple[Path, str]] | None = None
) -> Restored | None:
    """The newest checkpoint of ``directory`` that loads; ``None`` when there is none.

    A checkpoint that fails to load (truncated or corrupted zip, missing state or replay file) is skipped with
    a warning naming the bad file, and the one before it is tried.

    :param skipped: filled with ``(model file, reason)`` of every checkpoint that did not load."""
    skipped = [] if skipped is None else skipped
    for checkpoint in reversed(list_checkpoints(directory)):
        try:
            model, extra = load_checkpoint(checkpoint, load_model)
        except Exception as error:  # noqa: BLE001 - any failure means: use the previous checkpoint
            reason = f"{type(error).__name__}: {error}"
            log.warning("checkpoint %s is unreadable (%s); trying the previous one", checkpoint.model, reason)
            skipped.append((checkpoint.model, reason))
            continue
        return Restored(model, checkpoint, extra, skipped)
    return None
