"""``report.html``: one self-contained evaluation folder a person opens in a browser (offline, no CDN).

The page holds the learning curves of the run (PNG, drawn with matplotlib from the run's SB3 CSV log
``progress.csv`` and its periodic evaluations, ``evaluations.csv``), the metrics table of the evaluated policy against the
reference policies, and the replay videos, all by relative paths inside the folder.
"""

from __future__ import annotations

import csv
import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmrl.metrics import task_labels
from mmrl.runs import atomic_write, atomic_write_text

#: x and y columns of SB3's ``progress.csv`` drawn as learning curves, with their legend labels
CURVE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("rollout/ep_rew_mean", "training episodes (rollout/ep_rew_mean)"),
    ("eval/mean_reward", "periodic evaluation (eval/mean_reward)"),
)
TIMESTEPS_COLUMN = "time/total_timesteps"


@dataclass
class Curve:
    """One line of a learning-curve plot: ``y`` against env steps ``x``."""

    label: str
    x: np.ndarray
    y: np.ndarray
    source: str


def _read_progress_csv(path: Path) -> list[Curve]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    curves = []
    for column, label in CURVE_COLUMNS:
        points = []
        for row in rows:
            x, y = row.get(TIMESTEPS_COLUMN, ""), row.get(column, "")
            try:
                points.append((float(x), float(y)))
            except ValueError:  # SB3 leaves a cell empty when a key was not logged that time
                continue
        points = [p for p in points if math.isfinite(p[0]) and math.isfinite(p[1])]
        if points:
            xs, ys = np.array(points).T
            curves.append(Curve(label, xs, ys, str(path)))
    return curves


def _read_evaluations_npz(path: Path) -> list[Curve]:
    data = np.load(path)
    if "timesteps" not in data or "results" not in data or len(data["timesteps"]) == 0:
        return []
    results = np.asarray(data["results"], dtype=np.float64)
    return [Curve("periodic evaluation (evaluations.npz)", np.asarray(data["timesteps"], float), results.reshape(len(results), -1).mean(axis=1), str(path))]


def _read_evaluations_csv(path: Path) -> list[Curve]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    points = [(float(r["step"]), float(r["mean_return"])) for r in rows if r.get("step") and r.get("mean_return")]
    if not points:
        return []
    xs, ys = np.array(points).T
    return [Curve("periodic evaluation (evaluations.csv)", xs, ys, str(path))]


#: log file name -> reader, in the order they are searched for
LOG_READERS = {
    "progress.csv": _read_progress_csv,  # SB3's CSV logger
    "evaluations.csv": _read_evaluations_csv,  # python -m mmrl.train's periodic evaluations (step, mean_return, std_return)
    "evaluations.npz": _read_evaluations_npz,  # SB3's EvalCallback
}


def find_learning_curves(run_dir: str | os.PathLike[str]) -> list[Curve]:
    """Learning curves in a run directory: every log of :data:`LOG_READERS` under it (evaluation folders
    ``eval-*`` excluded). Unreadable files are skipped."""
    run_dir = Path(run_dir)
    curves: list[Curve] = []
    for name, reader in LOG_READERS.items():
        for path in sorted(run_dir.rglob(name)):
            if any(part.startswith("eval-") for part in path.relative_to(run_dir).parts[:-1]):
                continue
            try:
                curves += reader(path)
            except (OSError, ValueError, KeyError, csv.Error):
                continue
    return curves


def plot_learning_curves(
    curves: Sequence[Curve], path: str | os.PathLike[str], baselines: Mapping[str, float] | None = None, title: str = ""
) -> Path:
    """Draw ``curves`` (return against env steps) to a PNG at ``path``, with the baselines' mean returns as
    dashed horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 4.0), dpi=100)
    for curve in curves:
        axes.plot(curve.x, curve.y, marker="o" if len(curve.x) < 30 else None, markersize=3, label=curve.label)
    for i, (name, value) in enumerate((baselines or {}).items()):
        axes.axhline(value, linestyle="--", linewidth=1, color=f"C{i + 3}", label=f"{name} policy ({value:.2f})")
    axes.set_xlabel("env steps")
    axes.set_ylabel("mean episode return")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    try:
        return atomic_write(path, lambda file: figure.savefig(file, format="png", metadata={"Software": None}))
    finally:
        plt.close(figure)


# ---------------------------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.evaluated { background: #fff6d5; font-weight: 600; }
.meta td { text-align: left; }
.videos { display: flex; flex-wrap: wrap; gap: 1.2em; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #555; }
.note { color: #666; font-style: italic; }
code { background: #f3f3f3; padding: 0 3px; }
"""


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def _summary_cell(summary: Mapping[str, Any]) -> str:
    low, high = summary["ci95"]
    return f'{_fmt(summary["mean"])}<br><small>[{_fmt(low)}, {_fmt(high)}]</small>'


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """The HTML table of every policy's metrics: mean and 95% CI of return and length, then task metrics."""
    policies: Mapping[str, Any] = metrics["policies"]
    first = next(iter(policies.values()))
    task_keys = list(first.get("task", {}))
    labels = task_labels()
    reference = metrics.get("gap_reference")
    head = ["policy", "episode return<br><small>mean [95% CI]</small>", "return std", "episode length<br><small>mean [95% CI]</small>"]
    if reference:
        head.append(f"share of the gap<br><small>random 0%, {html.escape(reference)} 100%</small>")
    head += [html.escape(labels.get(k, k)) for k in task_keys]
    rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for name, values in policies.items():
        cells = [
            html.escape(name) + (" (evaluated)" if name == metrics.get("evaluated") else ""),
            _summary_cell(values["episode_return"]),
            _fmt(values["episode_return"]["std"]),
            _summary_cell(values["episode_length"]),
        ]
        if reference:
            share = values.get("share_of_gap")
            cells.append("" if share is None else f"{100 * share:.0f}%")
        for key in task_keys:
            value = values["task"].get(key)
            cells.append(_summary_cell(value) if isinstance(value, Mapping) else "" if value is None else _fmt(float(value)))
        css = ' class="evaluated"' if name == metrics.get("evaluated") else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def render_report(
    metrics: Mapping[str, Any],
    curve_image: str | None = None,
    curve_note: str = "",
    title: str = "mmrl evaluation",
) -> str:
    """The HTML text of ``report.html``.

    :param metrics: the content of ``metrics.json`` (see :mod:`mmrl.evaluate`).
    :param curve_image: path of the learning-curve PNG relative to the report, or ``None``.
    :param curve_note: a sentence shown instead of (or under) the curve, e.g. why there is none.
    """
    esc = html.escape
    source = metrics["source"]
    env = metrics["env"]
    meta = [
        ("evaluated", esc(str(metrics["evaluated"]))),
        ("source", esc(source.get("run_dir") or f"reference policy {source.get('policy')}")),
    ]
    if source.get("model"):
        meta.append(("model", esc(f"{source['model']} ({source.get('algo')})")))
    meta += [
        ("environment", f"<code>{esc(env['id'])}</code> options <code>{esc(str(env.get('options', {})))}</code>"),
        ("episodes", f"{metrics['episodes']} (seeds {metrics['seeds'][0]}..{metrics['seeds'][1]}), "
                     f"{'deterministic' if metrics['deterministic'] else 'stochastic'} actions"),
        ("confidence intervals", esc(metrics.get("ci_method", ""))),
        ("created", esc(metrics.get("created", ""))),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        '<table class="meta">' + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in meta) + "</table>",
        "<h2>Learning curve</h2>",
    ]
    if curve_image:
        parts.append(f'<img src="{esc(curve_image)}" alt="learning curve: mean episode return against env steps">')
    if curve_note:
        parts.append(f'<p class="note">{esc(curve_note)}</p>')
    parts += [
        "<h2>Metrics against the reference policies</h2>",
        metrics_table(metrics),
        '<p class="note">Same episodes (same seeds) for every policy. Regret vs oracle: the sum over a session of the '
        "best slot's expected reward minus the chosen one's. Full numbers: "
        '<a href="metrics.json">metrics.json</a>.</p>',
        "<h2>Replays</h2>",
    ]
    videos = metrics.get("videos", [])
    if not videos:
        parts.append('<p class="note">No videos (video.episodes=0).</p>')
    else:
        parts.append(
            '<p class="note">Each frame: left, the observation the action was taken on (the chosen slot outlined); '
            "right, the observation that followed; the panel shows the text, the action, the reward and the return so far. "
            "Frame 0 is the first observation, the last frame the final one.</p>"
        )
        parts.append('<div class="videos">')
        for video in videos:
            parts.append(
                f'<figure><video controls preload="auto" width="{video["width"]}" height="{video["height"]}" '
                f'src="{esc(video["file"])}"></video>'
                f"<figcaption>episode {video['episode']} (seed {video['seed']}): return {video['return']:.2f}, "
                f"{video['length']} steps, {video['frames']} frames at {video['fps']} fps</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    out_dir: str | os.PathLike[str],
    metrics: Mapping[str, Any],
    run_dir: str | os.PathLike[str] | None = None,
    title: str = "mmrl evaluation",
) -> Path:
    """Write ``report.html`` (and ``learning_curve.png`` when the run has logs) into ``out_dir``.

    :param run_dir: the training run, searched for logs; ``None`` for a policy-only evaluation."""
    out_dir = Path(out_dir)
    curve_image, note = None, ""
    if run_dir is None:
        note = "No learning curve: this evaluates a reference policy, not a training run."
    else:
        curves = find_learning_curves(run_dir)
        if curves:
            baselines = {
                name: values["episode_return"]["mean"]
                for name, values in metrics["policies"].items()
                if name != metrics.get("evaluated")
            }
            plot_learning_curves(curves, out_dir / "learning_curve.png", baselines, title=str(metrics["env"]["id"]))
            curve_image = "learning_curve.png"
            sources = sorted({os.path.relpath(c.source, run_dir) for c in curves})
            note = f"From {', '.join(sources)} in the run directory; dashed lines: reference policies on this evaluation's episodes."
        else:
            note = f"No learning curve: none of {', '.join(LOG_READERS)} found in {run_dir}."
    return atomic_write_text(out_dir / "report.html", render_report(metrics, curve_image, note, title))
