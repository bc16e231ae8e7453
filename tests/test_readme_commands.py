"""Every training command README.md shows learns: its table "What each training command reaches" lists them with
the return, share of the random-to-reference gap and wall time each reached on 2 cores.

The fast test checks that each ``python -m mmrl.train`` / ``mmrl-train`` line of README's code blocks is a row of
that table, or of a kind the table leaves out on purpose (:data:`NOT_A_ROW`). The slow tests run each row's command
as written, in a scratch folder (``MMRL_README_RUNS=<folder>`` keeps the runs there instead), and check the run's own
summary: a final return whose 95% interval is clear of random's, and a share of the gap no more than
:data:`SHARE_MARGIN` below the one the table states. Wall times are reported, never asserted (a loaded machine is
slower); the table's figures come from these runs (BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TABLE_TITLE = "### What each training command reaches"
#: README lines that run mmrl.train but are not a training command of their own, and why
NOT_A_ROW = {
    "--multirun": "a sweep: its jobs are rows' commands at other seeds or extractors (BENCHMARKS.md has their tables)",
    "resume=": "continues a run that an earlier command started",
    "--help": "prints the help",
    "--cfg": "prints the composed config",
    "-sc install=": "installs tab completion",
    "<TAB>": "tab completion",
    "pretrained_image_path=": "needs a vision model you saved where there is internet; no learning claim",
}
#: how far below the table's share of the gap a rerun may land (another seed of the machine's timing, thread
#: scheduling and evaluation episodes moves it by a few points)
SHARE_MARGIN = 0.15


def table_rows() -> list[dict[str, str]]:
    """The rows of README's table: command, steps, wall time, return, random, reference, share of the gap."""
    text = README.read_text()
    assert TABLE_TITLE in text, f"README.md has no {TABLE_TITLE!r} section"
    section = text.split(TABLE_TITLE, 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 7:
            rows.append(dict(zip(("command", "steps", "wall", "return", "random", "reference", "share"), cells)))
    return rows


def readme_train_lines() -> list[str]:
    """Each training command line of README's bash blocks, as ``python -m mmrl.train ...`` (comments dropped)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command.startswith("mmrl-train"):
                command = "python -m mmrl.train" + command[len("mmrl-train") :]
            if command.startswith("python -m mmrl.train"):
                lines.append(command)
    return lines


def row_command(row: dict[str, str]) -> str:
    return row["command"].strip("`")


def test_every_readme_training_command_is_a_row_of_the_table() -> None:
    rows = {row_command(row) for row in table_rows()}
    assert "python -m mmrl.train" in rows and len(rows) >= 5, rows
    for line in readme_train_lines():
        if line.rstrip("\\").strip() in rows or any(marker in line for marker in NOT_A_ROW):
            continue
        pytest.fail(f"README.md shows {line!r}, which is not a row of its table {TABLE_TITLE!r}: add it there (with what it reaches) or drop it")


@pytest.mark.slow
@pytest.mark.parametrize("row", table_rows(), ids=lambda row: row_command(row).replace("python -m mmrl.train", "train").strip())
def test_readme_training_command_learns(row: dict[str, str], tmp_path: Path) -> None:
    folder = Path(os.environ.get("MMRL_README_RUNS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    before = set(folder.glob("runs/*/summary.json"))
    argv = shlex.split(row_command(row))
    result = subprocess.run([sys.executable, *argv[1:], "progress=false"], cwd=folder, capture_output=True, text=True, timeout=3 * 3600)
    assert result.returncode == 0, result.stderr[-3000:]
    (summary_file,) = set(folder.glob("runs/*/summary.json")) - before
    summary = json.loads(summary_file.read_text())
    print(f"{row_command(row)}: {summary['final_return']:.2f} {summary['final_ci95']}, random {summary['random_return']:.2f}, "
          f"{summary['reference']} {summary[summary['reference'] + '_return']:.2f}, share {summary['share_of_gap']:.2f}, "
          f"{summary['wall_time_s']:.0f} s ({summary_file.parent})")  # fmt: skip
    assert summary["better_than_random"], (row, summary)
    stated = re.match(r"(\d+)%", row["share"])
    if stated:
        assert summary["share_of_gap"] >= int(stated.group(1)) / 100 - SHARE_MARGIN, (row, summary)
