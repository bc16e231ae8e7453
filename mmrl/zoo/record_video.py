"""``python -m mmrl.zoo.record_video <arguments of rl_zoo3.record_video>``: the Zoo's video recorder for mmrl's envs.

``rl_zoo3.train`` and ``rl_zoo3.enjoy`` take ``--gym-packages mmrl``, ``rl_zoo3.record_video`` does not, so on its own it
cannot make an ``mmrl/...`` env. This module imports mmrl (which registers the ids) and runs the Zoo's script as it is.
"""

from __future__ import annotations

import runpy

import mmrl  # noqa: F401  (registers mmrl/Recommend-v0, mmrl/Navigate-v0, mmrl/Diagnose-v0)


def main() -> None:
    """Run ``rl_zoo3.record_video`` with this process's command line."""
    runpy.run_module("rl_zoo3.record_video", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
