"""Hyperparameters of mmrl's environments for RL Baselines3 Zoo (``pip install -e ".[zoo]"``).

The Zoo reads a ``--conf-file`` that is either a YAML path or an importable module with a ``hyperparams`` dict;
:mod:`mmrl.zoo.ppo` is such a module, built from ``ppo.yml`` beside it, so that an installed mmrl needs no path::

    python -m rl_zoo3.train --algo ppo --env mmrl/Recommend-v0 --gym-packages mmrl --conf-file mmrl.zoo.ppo

The Zoo evaluates a ``policy_kwargs`` string in its own namespace, where ``mmrl`` is not imported, so the YAML names
the extractor as ``__import__('mmrl').MultimodalExtractor``: an expression that resolves wherever mmrl is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

FOLDER = Path(__file__).resolve().parent


def conf_path(algo: str) -> Path:
    """The YAML file of ``algo`` (e.g. ``"ppo"``), for ``--conf-file <path>``; ``ValueError`` naming those shipped."""
    path = FOLDER / f"{algo}.yml"
    if not path.is_file():
        shipped = sorted(p.stem for p in FOLDER.glob("*.yml"))
        raise ValueError(f"mmrl ships no RL Zoo hyperparameters for algo {algo!r}; valid choices: {shipped}")
    return path


def load_hyperparams(algo: str) -> dict[str, dict[str, Any]]:
    """``{env id: hyperparameters}`` of ``algo``, as the Zoo reads them from the YAML file."""
    return yaml.safe_load(conf_path(algo).read_text())
