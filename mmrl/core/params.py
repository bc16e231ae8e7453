"""Build an env's frozen parameter dataclass from keyword arguments, with errors that name the bad key."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any, TypeVar

ParamsT = TypeVar("ParamsT")


def build_params(cls: type[ParamsT], overrides: Mapping[str, Any], env_name: str) -> ParamsT:
    """``cls(**overrides)``, but an unknown key raises ``TypeError`` listing the valid ones.

    The error starts with Python's own wording for one unknown key (``Env() got an unexpected keyword argument
    'k'``): wrappers such as TorchRL's ``GymEnv`` pass optional arguments (``frameskip``) and retry without them
    only when the error reads that way. Ints are accepted for float fields (Hydra and YAML write ``1`` for ``1.0``)."""
    valid = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        names = ", ".join(map(repr, unknown))
        python = f"an unexpected keyword argument {names}" if len(unknown) == 1 else f"unexpected keyword arguments {names}"
        close = difflib.get_close_matches(unknown[0], list(valid), n=1)  # the likely typo, for the CLI user
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TypeError(f"{env_name}() got {python}: {env_name} has no option {names}; valid options: {sorted(valid)}{hint}")
    values = {}
    for key, value in overrides.items():
        kind = valid[key].type
        if kind in ("float", float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind in ("int", int) and not (isinstance(value, int) and not isinstance(value, bool)):
            raise TypeError(f"{env_name} option {key!r} must be an int; got {value!r}")
        if kind in ("float", float) and not isinstance(value, float):
            raise TypeError(f"{env_name} option {key!r} must be a number; got {value!r}")
        values[key] = value
    return cls(**values)
