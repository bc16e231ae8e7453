"""retain_freed_memory: big blocks freed and allocated again come back without page faults; opt-out works."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

# Allocates and frees a 50 MB tensor (above glibc's largest mmap threshold) 20 times and prints whether
# retain_freed_memory was applied and the minor page faults of the last 10 rounds (the heap has grown by then).
_PROBE = """
import resource, sys, torch
from mmrl.core.memory import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(20):
    if i == 10:
        start = faults()
    torch.ones(50 * 2**20, dtype=torch.uint8)
print(applied, faults() - start)
"""


def _probe(mode: str, **env: str) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], env={**os.environ, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@glibc_only
def test_retained_memory_comes_back_without_page_faults() -> None:
    applied, faults = _probe("retain")
    assert applied
    assert faults < 1000, f"{faults} page faults re-allocating a freed 50 MB block 10 times"
    # without it, every round maps the block afresh: ~12,800 faults of 4 KiB pages a round
    plain_applied, plain_faults = _probe("plain")
    assert not plain_applied and plain_faults > 10 * 10_000


@glibc_only
def test_environment_variable_opts_out() -> None:
    applied, faults = _probe("retain", MMRL_RETAIN_FREED_MEMORY="0")
    assert not applied and faults > 10 * 10_000


def test_the_library_leaves_malloc_alone_and_the_command_lines_opt_in(tmp_path) -> None:
    """A program that builds envs keeps its malloc settings; ``mmrl.evaluate`` (like ``mmrl.train``) asks for
    retained memory on the CPU."""
    code = (
        "import sys, mmrl, mmrl.core.memory as m; mmrl.make_batched('mmrl/Recommend-v0', num_envs=2); print(m._applied); "
        "from mmrl.evaluate import main; main(['policy=random', 'episodes=2', 'video.episodes=0', 'baselines=[]', "
        f"'out={tmp_path / 'ev'}']); print(m._applied)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert out[0] == "None" and out[-1] == str(expected)
