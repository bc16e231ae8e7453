"""``python -m mmrl.compare RUN_OR_SWEEP_DIR ...``: the modality table of finished training runs.

Reads every ``summary.json`` (and the ``config.yaml`` beside it) under the given folders, e.g. the
output of a Hydra multirun over seeds, fusions and ``extractor.modalities``, and prints per env:
random, each image-only / text-only / fused row, the myopic oracle and, where the env has one, the
planner, as mean ± std and 95% interval over seeds of the final evaluation return, with each row's share
of the random→planner gap (random→oracle where there is no planner). The references come from the runs'
own evaluations (the same held-out episodes as the agents). Example::

    python -m mmrl.train --multirun seed=0,1,2 extractor=film,concat,gated,cross_attention 'run_dir=runs/sweep/${hydra:job.override_dirname}'
    python -m mmrl.train --multirun seed=0,1,2 extractor=film extractor.modalities=[image],[text] 'run_dir=runs/sweep/${hydra:job.override_dirname}'
    python -m mmrl.compare runs/sweep/          # prints the tables, writes runs/sweep/modality.md and modality.json

Runs are grouped by env id, options and training steps, so runs of different setups never share a row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmrl.metrics import summarize
from mmrl.runs import CONFIG_FILE, SUMMARY_FILE, atomic_write_text, load_run_config

#: the files :func:`main` writes by default, in the first folder it is given
DEFAULT_MARKDOWN = "modality.md"
DEFAULT_JSON = "modality.json"


@dataclass(frozen=True)
class RunResult:
    """What the table needs of one finished run."""

    env: str
    setup: str
    row: str
    seed: int
    final_return: float
    random_return: float
    oracle_return: float | None
    path: Path
    planner_return: float | None = None


def row_label(fusion: str, modalities: list[str]) -> str:
    """``film`` for a fused run, ``image only (film)`` / ``text only (film)`` for an ablation."""
    used = sorted(set(modalities))
    if used == ["image", "text"]:
        return fusion
    if len(used) == 1:
        return f"{used[0]} only ({fusion})"
    raise ValueError(f"modalities must be a non-empty subset of ['image', 'text']; got {modalities!r}")


def load_run(summary_path: Path) -> RunResult:
    """One run from its ``summary.json`` and ``config.yaml``; errors name the file and what is missing."""
    try:
        summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{summary_path}: not valid JSON ({error})") from error
    config_path = summary_path.with_name(CONFIG_FILE)
    if not config_path.is_file():
        raise ValueError(f"{summary_path}: no {CONFIG_FILE} beside it (is this an mmrl.train run directory?)")
    config = load_run_config(summary_path.parent, required=())
    for key in ("env", "seed", "final_return", "random_return", "total_timesteps"):
        if key not in summary:
            raise ValueError(f"{summary_path}: missing key {key!r}")
    extractor = config.get("extractor", {})
    options = json.dumps(config.get("env", {}).get("options", {}), sort_keys=True)
    algo_config = config.get("algo", {})
    algo = algo_config.get("name", summary.get("algo", "?")) + (" (device-resident)" if algo_config.get("device_resident") else "")
    return RunResult(
        env=summary["env"],
        setup=f"{algo}, {summary['total_timesteps']:,} steps, options {options}",
        row=row_label(extractor.get("fusion", summary.get("fusion", "?")), extractor.get("modalities", ["image", "text"])),
        seed=int(summary["seed"]),
        final_return=float(summary["final_return"]),
        random_return=float(summary["random_return"]),
        oracle_return=None if summary.get("oracle_return") is None else float(summary["oracle_return"]),
        path=summary_path.parent,
        planner_return=None if summary.get("planner_return") is None else float(summary["planner_return"]),
    )


def find_runs(paths: list[Path]) -> list[RunResult]:
    """Every finished run under ``paths`` (a run directory, or any folder holding run directories)."""
    runs = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        found = [path] if path.is_file() else sorted(path.rglob(SUMMARY_FILE))
        runs.extend(load_run(p) for p in found)
    return runs


def _row_order(row: str) -> tuple[int, str]:
    return (0 if " only " in row else 1, row)


def modality_tables(runs: list[RunResult]) -> list[dict[str, Any]]:
    """One table per (env, setup): rows with mean, std, share of the gap and the seeds."""
    groups: dict[tuple[str, str], list[RunResult]] = defaultdict(list)
    for run in runs:
        groups[(run.env, run.setup)].append(run)
    tables = []
    for (env, setup), members in sorted(groups.items()):
        random_return = statistics.mean(r.random_return for r in members)
        oracles = [r.oracle_return for r in members if r.oracle_return is not None]
        oracle = statistics.mean(oracles) if oracles else None
        planners = [r.planner_return for r in members if r.planner_return is not None]
        planner = statistics.mean(planners) if planners else None
        reference = planner if planner is not None else oracle
        gap = None if reference is None or reference == random_return else reference - random_return
        by_row: dict[str, list[RunResult]] = defaultdict(list)
        for r in members:
            by_row[r.row].append(r)
        rows = []
        for name in sorted(by_row, key=_row_order):
            values = [r.final_return for r in sorted(by_row[name], key=lambda r: r.seed)]
            mean = statistics.mean(values)
            rows.append(
                {
                    "row": name,
                    "mean": mean,
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "ci95": summarize(np.asarray(values))["ci95"],
                    "share_of_gap": None if gap is None else (mean - random_return) / gap,
                    "seeds": sorted(r.seed for r in by_row[name]),
                }
            )
        tables.append({
            "env": env, "setup": setup, "random": random_return, "oracle": oracle, "planner": planner,
            "reference": "planner" if planner is not None else "oracle", "rows": rows,
        })  # fmt: skip
    return tables


def to_markdown(table: dict[str, Any]) -> str:
    """A table as Markdown (the format of BENCHMARKS.md)."""

    def share(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.0f}%"

    reference = table.get("reference", "oracle")
    lines = [
        f"**{table['env']}** ({table['setup']})",
        "",
        f"| policy | return (mean ± std over seeds) | 95% interval | share of random→{reference} gap | seeds |",
        "|---|---|---|---|---|",
        f"| random | {table['random']:.2f} | - | 0% | - |",
    ]
    for row in table["rows"]:
        seeds = ",".join(map(str, row["seeds"]))
        low, high = row["ci95"]
        lines.append(
            f"| {row['row']} | {row['mean']:.2f} ± {row['std']:.2f} | [{low:.2f}, {high:.2f}] | {share(row['share_of_gap'])} | {seeds} |"
        )
    if table["oracle"] is not None:
        gap = table["planner"] - table["random"] if table.get("planner") is not None else None
        oracle_share = "100%" if gap is None else share((table["oracle"] - table["random"]) / gap if gap else None)
        lines.append(f"| oracle (myopic) | {table['oracle']:.2f} | - | {oracle_share} | - |")
    if table.get("planner") is not None:
        lines.append(f"| planner | {table['planner']:.2f} | - | 100% | - |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmrl.compare", description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directories or folders holding them (searched recursively)")
    parser.add_argument("--out", type=Path, help=f"write the Markdown tables to this file (default: {DEFAULT_MARKDOWN} in the first folder)")
    parser.add_argument("--json", type=Path, help=f"write the tables as JSON to this file (default: {DEFAULT_JSON} in the first folder)")
    parser.add_argument("--no-files", action="store_true", help="only print the tables")
    args = parser.parse_args(argv)
    try:
        runs = find_runs(args.paths)
    except (FileNotFoundError, ValueError) as error:
        print(f"mmrl.compare: {error}", file=sys.stderr)
        return 2
    if not runs:
        print(f"mmrl.compare: no finished runs ({SUMMARY_FILE}) under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    tables = modality_tables(runs)
    text = "\n\n".join(to_markdown(t) for t in tables) + "\n"
    print(text, end="")
    if args.no_files:
        return 0
    # beside the runs compared (under runs/ for the CLI's runs), not in the folder the command runs from
    home = args.paths[0] if args.paths[0].is_dir() else args.paths[0].parent
    out = args.out or home / DEFAULT_MARKDOWN
    table_json = args.json or home / DEFAULT_JSON
    atomic_write_text(out, text)
    atomic_write_text(table_json, json.dumps(tables, indent=2) + "\n")
    print(f"wrote {out} and {table_json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
