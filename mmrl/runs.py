"""Run plumbing shared by ``mmrl.train``, ``mmrl.evaluate`` and ``mmrl.compare``: run-folder names, atomic writes,
reading a run's saved config and choosing the device.

A run directory is a folder holding :data:`CONFIG_FILE` (the resolved training config) and :data:`SUMMARY_FILE`
(written when the run ends); everything else in it belongs to the module that writes it. Every file is written
through :func:`atomic_write`, so a reader (or a run killed mid-write) never sees half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
import yaml

#: the resolved config of a run, in its run directory
CONFIG_FILE = "config.yaml"
#: the end-of-run summary of ``python -m mmrl.train``
SUMMARY_FILE = "summary.json"
#: the longest folder name most file systems take (bytes)
NAME_MAX = 255
#: room kept in a folder name for the ``-<n>`` suffix of :func:`unique_run_dir` and :func:`new_output_dir`
_SUFFIX_ROOM = 8


#: algorithm names of runs saved when the device-resident agents were algorithms of their own
_FORMER_ALGO_NAMES = {"ppo_fast": "ppo", "dqn_fast": "dqn"}


class RunDirError(ValueError):
    """A folder that is not a usable run directory; the message names the path and what is wrong."""


# ---------------------------------------------------------------------------------------------- folders
def check_run_dir_name(path: str | os.PathLike[str]) -> None:
    """Fail, naming the remedy, when a folder name of ``path`` is longer than file systems take.

    :raises ValueError: naming the folder, its size and the limit."""
    path = Path(path)
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX - _SUFFIX_ROOM:
            raise ValueError(
                f"run_dir={str(path)!r}: the folder name {part[:60]!r}... is {size} bytes; file systems take at most "
                f"{NAME_MAX}. With run_dir=...${{hydra:job.override_dirname}}, put the fixed settings in an experiment= "
                "config (configs/experiment/) instead of on the command line, or name the runs by the swept keys "
                "(run_dir=sweep/${extractor.fusion}-${seed})"
            )


def _numbered(path: Path, n: int) -> Path:
    """``path`` for ``n == 0``, else its sibling ``path-<n>``."""
    return path if n == 0 else path.with_name(f"{path.name}-{n}")


def unique_run_dir(path: str | os.PathLike[str]) -> Path:
    """``path``, or ``path-1``, ``path-2`` ... if a run already lives there (multirun jobs started in the same second).

    The folder is not created; a folder without :data:`CONFIG_FILE` (e.g. the one Hydra made for its log) is used."""
    path = Path(path)
    check_run_dir_name(path)
    n = 0
    while (_numbered(path, n) / CONFIG_FILE).exists():
        n += 1
    return _numbered(path, n)


def new_output_dir(path: str | os.PathLike[str], attempts: int = 10_000) -> Path:
    """Create ``path``, or ``path-1``, ``path-2`` ... if it exists: never an existing folder.

    :raises RunDirError: when ``attempts`` names are all taken."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for n in range(attempts):
        candidate = _numbered(path, n)
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RunDirError(f"could not create a new output folder next to {path}")


def publish_dir(work: str | os.PathLike[str], path: str | os.PathLike[str], attempts: int = 10_000) -> Path:
    """Move a finished folder ``work`` to ``path`` (or ``path-1``, ``path-2`` ... if it exists), in one rename: a
    reader never sees a half-written folder under the final name, and a killed writer leaves only ``work``.

    :raises RunDirError: when ``attempts`` names are all taken."""
    work, path = Path(work), Path(path)
    for n in range(attempts):
        candidate = _numbered(path, n)
        if candidate.exists():
            continue
        try:
            os.rename(work, candidate)
            return candidate
        except OSError:  # taken meanwhile
            continue
    raise RunDirError(f"could not move {work} to a new folder next to {path}")


# ---------------------------------------------------------------------------------------------- atomic writes
def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, then rename it into place.

    A reader sees the old file or the complete new one, never a partial one (same-folder :func:`os.replace`);
    if ``write`` raises, the old file stays and the temporary one is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    return atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """:func:`atomic_write` of ``data`` as indented JSON with a final newline."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def atomic_write_yaml(path: str | os.PathLike[str], data: Any) -> Path:
    """:func:`atomic_write` of ``data`` (plain containers) as block-style YAML, keys in their given order."""
    return atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True))


# ---------------------------------------------------------------------------------------------- saved config
def load_run_config(run_dir: str | os.PathLike[str], required: tuple[str, ...] = ("env.id", "algo.name")) -> dict[str, Any]:
    """The resolved config saved in a run directory, as plain containers, with the dotted keys ``required`` present.

    :raises RunDirError: naming the path and what is missing or corrupt."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunDirError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise RunDirError(f"run={run_dir} is not a directory")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(
            f"{run_dir} is not a run directory: {CONFIG_FILE} (the resolved config written by python -m mmrl.train) is missing"
        )
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise RunDirError(f"{path} is corrupt: not readable as YAML ({type(error).__name__}: {error})") from None
    if not isinstance(config, dict):
        raise RunDirError(f"{path} is corrupt: expected a mapping, got {type(config).__name__}")
    missing = [key for key in required if _select(config, key) is None]
    if missing:
        raise RunDirError(f"{path} is corrupt or not a training config: no {', '.join(missing)}")
    algo = config.get("algo")
    if isinstance(algo, dict) and algo.get("name") in _FORMER_ALGO_NAMES:  # runs saved before algo.device_resident
        config["algo"] = {**algo, "name": _FORMER_ALGO_NAMES[algo["name"]], "device_resident": True}
    return config


def _select(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


# ---------------------------------------------------------------------------------------------- device
def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cpu``, ``cuda`` and ``cuda:<n>`` as they are.

    :raises ValueError: for any other value, or for ``cuda`` without CUDA (naming the value)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda'; got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available; use device=cpu or auto")
    return device
