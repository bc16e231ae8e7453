"""Atomic training checkpoints and resuming from the last good one, without pickle.

A checkpoint taken at ``N`` env steps is up to four files in ``<run_dir>/checkpoints/``:

- ``step_<N>.state.json``: the algorithm's counters (``num_timesteps``, updates, episodes, progress ...), the
  python, numpy and action-space RNG states, and the trainer's own state (e.g. best evaluation so far), as JSON;
- ``step_<N>.state.pt``: the tensors that state refers to (the torch and CUDA RNG states, numpy's MT19937 key, the
  training env's per-instance seeds and episode counters);
- ``step_<N>.replay.pt``: the replay buffer's arrays and position (off-policy algorithms only);
- ``step_<N>.zip``: the SB3 model (``model.save``: parameters, optimiser state).

No file is unpickled on resume, so a checkpoint from someone else runs no code: the model is built from the run's
``config.yaml``, the zip's weights are read with ``torch.load(weights_only=True)`` (SB3 ``set_parameters``), the
zip's ``data`` entry is only parsed as JSON (to check its step count, never deserialised), and the ``.pt`` files are
read with ``weights_only=True`` into tensors of the configured shapes. Checkpoints of older versions
(``.state.pkl``) are pickles and are refused with a message saying so.

Each file is written atomically (:func:`mmrl.runs.atomic_write`), the model last, so a ``.zip`` that exists is
complete unless something outside damaged it. Loading walks the checkpoints newest first and skips (with a
warning naming the file) any that fails to load.
"""

from __future__ import annotations

import collections
import json
import logging
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

from mmrl.runs import atomic_write, atomic_write_json

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d+)\.zip$")
FORMAT_VERSION = 2
"""Version 1 (``.state.pkl``/``.replay.pkl``) was pickled; it is refused rather than unpickled."""

#: the SB3 attributes that carry a run's progress across a resume (the rest is rebuilt from ``config.yaml``):
#: step and update counters, the progress the schedules read, DQN's target-update counter and its exploration rate
COUNTERS = ("num_timesteps", "_n_updates", "_episode_num", "_current_progress_remaining", "_n_calls", "exploration_rate")
#: the recent-episode statistics SB3 logs as ``rollout/ep_rew_mean`` (deques of plain dicts / bools)
EPISODE_BUFFERS = ("ep_info_buffer", "ep_success_buffer")
_TENSOR = "__tensor__"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded, with the reason."""


def save_model(model: BaseAlgorithm, path: str | Path) -> Path:
    """``model.save`` to ``path`` (a ``.zip``), atomically."""
    return atomic_write(path, model.save)


@dataclass(frozen=True)
class Checkpoint:
    """The files of the checkpoint taken at ``steps`` env steps."""

    steps: int
    model: Path
    state: Path
    tensors: Path
    replay_buffer: Path

    @classmethod
    def at(cls, directory: str | Path, steps: int) -> Checkpoint:
        stem = Path(directory) / f"step_{steps:010d}"
        return cls(steps, stem.with_suffix(".zip"), Path(f"{stem}.state.json"), Path(f"{stem}.state.pt"),
                   Path(f"{stem}.replay.pt"))  # fmt: skip

    @property
    def legacy_files(self) -> tuple[Path, Path]:
        """The pickled state and replay files of format version 1."""
        stem = self.model.with_suffix("")
        return Path(f"{stem}.state.pkl"), Path(f"{stem}.replay.pkl")

    def files(self) -> tuple[Path, ...]:
        return self.model, self.state, self.tensors, self.replay_buffer, *self.legacy_files


def list_checkpoints(directory: str | Path) -> list[Checkpoint]:
    """Checkpoints in ``directory`` (by their model file), oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    steps = sorted(int(m.group(1)) for p in directory.iterdir() if (m := _NAME.match(p.name)))
    return [Checkpoint.at(directory, s) for s in steps]


# ----------------------------------------------------------------------------- JSON + tensors
def split_tensors(value: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """``value`` as JSON-able data, each tensor or array in it moved into ``tensors`` and replaced by a reference.

    :raises TypeError: for anything that is neither plain data nor an array (it would need pickle)."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu()
        return {_TENSOR: path}
    if isinstance(value, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(value))
        return {_TENSOR: path, "numpy": True}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"checkpoint state at {path or 'top level'!r}: keys must be strings; got {list(value)!r}")
        return {k: split_tensors(v, tensors, f"{path}.{k}" if path else k) for k, v in value.items()}
    if isinstance(value, (list, tuple, collections.deque)):
        return [split_tensors(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
    raise TypeError(f"checkpoint state at {path!r} is a {type(value).__name__}, which JSON and tensors cannot hold")


def join_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Undo :func:`split_tensors` (lists stay lists; arrays saved from numpy come back as numpy)."""
    if isinstance(value, dict):
        if _TENSOR in value:
            tensor = tensors[value[_TENSOR]]
            return tensor.numpy() if value.get("numpy") else tensor
        return {k: join_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [join_tensors(v, tensors) for v in value]
    return value


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write(path, lambda f: torch.save(tensors, f))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    tensors = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise CheckpointError(f"{path.name} does not hold a dictionary of tensors")
    return tensors


# ----------------------------------------------------------------------------- RNG states
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
    """Put back what :func:`rng_state` returned, also after a JSON round trip (lists where tuples were).

    Call it after loading the model: building and loading reseed."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    if model is not None and state.get("action_space") is not None:
        model.action_space.np_random.bit_generator.state = state["action_space"]


# ----------------------------------------------------------------------------- replay buffer
def _buffer_fields(buffer: Any) -> dict[str, Any]:
    """The replay buffer's data: its arrays (or dicts of arrays) and its position."""
    fields = {name: value for name, value in vars(buffer).items()
              if isinstance(value, (np.ndarray, torch.Tensor)) or (isinstance(value, dict) and value
                  and all(isinstance(v, (np.ndarray, torch.Tensor)) for v in value.values()))}  # fmt: skip
    fields.update(pos=int(buffer.pos), full=bool(buffer.full))
    return fields


def _restore_buffer(buffer: Any, saved: dict[str, Any]) -> None:
    """Copy ``saved`` (from :func:`_buffer_fields`) into ``buffer``'s own storage, checking every shape and dtype."""
    expected = _buffer_fields(buffer)
    if set(saved) != set(expected):
        raise CheckpointError(f"replay buffer fields {sorted(saved)} differ from the configured buffer's {sorted(expected)}")

    def copy(name: str, into: Any, value: Any) -> None:
        value = torch.as_tensor(value)
        into_t = torch.as_tensor(into) if isinstance(into, np.ndarray) else into
        if tuple(value.shape) != tuple(into_t.shape) or value.dtype != into_t.dtype:
            raise CheckpointError(
                f"replay buffer {name} is {tuple(value.shape)} {value.dtype}; the configured buffer holds "
                f"{tuple(into_t.shape)} {into_t.dtype}"
            )
        into_t.copy_(value)  # for a numpy array, torch.as_tensor shares its memory

    for name, into in expected.items():
        if name in ("pos", "full"):
            continue
        if isinstance(into, dict):
            if set(saved[name]) != set(into):
                raise CheckpointError(f"replay buffer {name} has keys {sorted(saved[name])}; expected {sorted(into)}")
            for key, tensor in into.items():
                copy(f"{name}.{key}", tensor, saved[name][key])
        else:
            copy(name, into, saved[name])
    buffer.pos, buffer.full = int(saved["pos"]), bool(saved["full"])


# ----------------------------------------------------------------------------- save and load
def save_checkpoint(
    model: BaseAlgorithm, directory: str | Path, extra_state: dict[str, Any] | None = None, keep: int = 3
) -> Checkpoint:
    """Checkpoint ``model`` at its ``num_timesteps``; keep the ``keep`` newest checkpoints.

    :param extra_state: plain data and tensors/arrays to get back on resume (env counters, best evaluation ...)."""
    checkpoint = Checkpoint.at(directory, model.num_timesteps)
    counters = {name: getattr(model, name) for name in COUNTERS if hasattr(model, name)}
    episodes = {name: list(buffer) for name in EPISODE_BUFFERS if (buffer := getattr(model, name, None)) is not None}
    state = {"format": FORMAT_VERSION, "counters": counters, "episode_buffers": episodes, "rng": rng_state(model),
             "extra": extra_state or {}}  # fmt: skip
    tensors: dict[str, torch.Tensor] = {}
    state_json = split_tensors(state, tensors)
    _save_tensors(checkpoint.tensors, tensors)
    atomic_write_json(checkpoint.state, state_json)
    if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
        buffer_tensors: dict[str, torch.Tensor] = {}
        layout = split_tensors(_buffer_fields(model.replay_buffer), buffer_tensors)
        _save_tensors(checkpoint.replay_buffer, {**buffer_tensors, "__layout__": _json_tensor(layout)})
    save_model(model, checkpoint.model)  # last: its presence marks the checkpoint complete
    for old in list_checkpoints(directory)[: -max(keep, 1)]:
        for path in old.files():
            path.unlink(missing_ok=True)
    return checkpoint


def _json_tensor(value: Any) -> torch.Tensor:
    """JSON text as a uint8 tensor, so that a ``weights_only`` file can carry its own layout."""
    return torch.frombuffer(bytearray(json.dumps(value).encode("utf-8")), dtype=torch.uint8)


def _tensor_json(tensor: torch.Tensor) -> Any:
    return json.loads(bytes(tensor.numpy()).decode("utf-8"))


def zip_num_timesteps(path: Path) -> int:
    """The step count recorded in an SB3 zip's ``data`` entry, read as JSON text (nothing is deserialised).

    :raises CheckpointError: for a zip that is not a complete SB3 save."""
    with zipfile.ZipFile(path) as archive:  # a truncated file fails here or in testzip
        bad = archive.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"bad CRC for {bad}")
        try:
            data = json.loads(archive.read("data").decode("utf-8"))
            return int(data["num_timesteps"])
        except (KeyError, ValueError, TypeError) as error:
            raise CheckpointError(f"{path.name} is not an SB3 save with a step count ({error})") from None


def load_checkpoint(checkpoint: Checkpoint, build_model: Callable[[], BaseAlgorithm]) -> tuple[BaseAlgorithm, dict[str, Any]]:
    """Load one checkpoint into a model ``build_model()`` builds (from the run's config, attached to its env): the
    weights and optimiser state, the counters, the replay buffer, then the RNG states.

    :raises Exception: whatever fails first (a truncated zip, a missing or unreadable state file, a pickled
        checkpoint of an older version ...)."""
    if not checkpoint.state.is_file() and checkpoint.legacy_files[0].is_file():
        raise CheckpointError(
            f"{checkpoint.legacy_files[0].name} was written by an older mmrl as a pickle, which can run code when "
            "loaded, so it is not loaded"
        )
    steps = zip_num_timesteps(checkpoint.model)
    state = join_tensors(json.loads(checkpoint.state.read_text(encoding="utf-8")), _load_tensors(checkpoint.tensors))
    if state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{checkpoint.state.name} has format {state.get('format')!r}; expected {FORMAT_VERSION}")
    counters = state["counters"]
    if steps != counters["num_timesteps"]:
        raise CheckpointError(f"model is at {steps} steps, state file at {counters['num_timesteps']}")
    model = build_model()
    model.set_parameters(str(checkpoint.model), exact_match=True, device=model.device)
    for name, value in counters.items():
        setattr(model, name, value)
    for name, items in state["episode_buffers"].items():  # SB3 keeps a deque it finds when learning resumes
        setattr(model, name, collections.deque(items, maxlen=model._stats_window_size))
    if isinstance(model, OffPolicyAlgorithm):
        saved = _load_tensors(checkpoint.replay_buffer)
        layout = _tensor_json(saved.pop("__layout__"))
        _restore_buffer(model.replay_buffer, join_tensors(layout, saved))
    restore_rng_state(state["rng"], model)
    return model, state["extra"]


@dataclass
class Restored:
    """A model loaded from a checkpoint and the state saved with it."""

    model: BaseAlgorithm
    checkpoint: Checkpoint
    extra_state: dict[str, Any]
    skipped: list[tuple[Path, str]]
    """Newer checkpoints that failed to load, with the reason."""


def load_latest_checkpoint(
    directory: str | Path, build_model: Callable[[], BaseAlgorithm], skipped: list[tuple[Path, str]] | None = None
) -> Restored | None:
    """The newest checkpoint of ``directory`` that loads; ``None`` when there is none.

    A checkpoint that fails to load (truncated or corrupted zip, missing state or replay file) is skipped with
    a warning naming the bad file, and the one before it is tried.

    :param build_model: builds a fresh model from the run's config (called once per checkpoint tried).
    :param skipped: filled with ``(model file, reason)`` of every checkpoint that did not load."""
    skipped = [] if skipped is None else skipped
    for checkpoint in reversed(list_checkpoints(directory)):
        try:
            model, extra = load_checkpoint(checkpoint, build_model)
        except Exception as error:  # noqa: BLE001 - any failure means: use the previous checkpoint
            reason = f"{type(error).__name__}: {error}"
            log.warning("checkpoint %s is unreadable (%s); trying the previous one", checkpoint.model, reason)
            skipped.append((checkpoint.model, reason))
            continue
        return Restored(model, checkpoint, extra, skipped)
    return None
