"""The README's Python examples run as written, and its reference-policy table is what the code gives."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import mmrl
from mmrl.agents.reference import make_reference_policy
from mmrl.episodes import run_episodes

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index: int, tmp_path: Path) -> None:
    code = python_blocks()[index]
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for comment in re.findall(r'print\(.*\)\s+# "(.*)"', code):
        assert comment in result.stdout


def test_readme_reference_table_matches_the_code() -> None:
    row = re.search(r"\| mean return \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", README.read_text())
    assert row, "the reference-policy table is missing from README.md"
    for name, claimed in zip(("random", "greedy", "oracle"), map(float, row.groups())):
        env = mmrl.make_batched("mmrl/Recommend-v0", num_envs=2000)
        policy = make_reference_policy(name, env)
        got = run_episodes(env, policy.act, seed=0, update=policy.update).mean_return
        assert round(got, 2) == claimed, (name, got, claimed)
