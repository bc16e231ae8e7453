"""``report.html``: one self-contained evaluation folder a person opens in a browser (offline, no CDN).

The page holds a headline (the evaluated policy's share of the random-to-reference gap, and whether its 95% interval
lies above random's), the learning curves of the run (PNG, drawn with matplotlib from the run's SB3 CSV log
``progress.csv`` and its periodic evaluations, ``evaluations.csv``), the metrics table of the evaluated policy against the
reference policies, a histogram of each policy's episode returns, and the replay videos of chosen episodes (first,
best, median, worst), each with a poster frame, its controls below the picture, a per-step table beside it (with
the outcome of each step and the hidden ground truth) and the env's legend, all by relative paths inside the folder.
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


def plot_return_histograms(returns: Mapping[str, np.ndarray], path: str | os.PathLike[str], evaluated: str | None = None) -> Path:
    """Draw the distribution of episode returns of each policy (one histogram per policy, shared bins and x axis,
    the mean as a line) to a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(returns)
    values = np.concatenate([np.asarray(returns[n], dtype=np.float64) for n in names])
    low, high = float(values.min()), float(values.max())
    discrete = np.allclose(values, np.round(values)) and high - low <= 40
    bins = np.arange(low - 0.5, high + 1.5) if discrete else np.linspace(low, high if high > low else low + 1, 31)
    figure, axes = plt.subplots(len(names), 1, figsize=(7.5, 0.3 + 1.05 * len(names)), dpi=100, sharex=True, squeeze=False)
    for i, (name, ax) in enumerate(zip(names, axes[:, 0], strict=True)):
        data = np.asarray(returns[name], dtype=np.float64)
        ax.hist(data, bins=bins, color="C1" if name == evaluated else "C0", alpha=0.85)
        ax.axvline(float(data.mean()), color="k", linewidth=1, linestyle="--")
        ax.set_ylabel(name + (" *" if name == evaluated else ""), rotation=0, ha="right", va="center", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("episode return (dashed: mean; * evaluated)")
    figure.tight_layout()
    try:
        return atomic_write(path, lambda file: figure.savefig(file, format="png", metadata={"Software": None}))
    finally:
        plt.close(figure)


# ---------------------------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1800px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.evaluated { background: #fff6d5; font-weight: 600; }
.meta td { text-align: left; }
figure { margin: 0; } figcaption { font-size: 0.95em; color: #333; margin-bottom: 4px; }
.note { color: #666; font-style: italic; }
code { background: #f3f3f3; padding: 0 3px; }
.verdict { font-size: 1.05em; padding: 0.6em 0.9em; border-radius: 4px; background: #eef6ee; border: 1px solid #9c9; }
.verdict.warn { background: #fdeeee; border-color: #d99; }
.replay { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; margin-bottom: 1.5em; }
.replay figure { flex: 4 1 480px; min-width: 0; }
video { display: block; width: 100%; height: auto; background: #111; }
.player { display: flex; align-items: center; gap: 6px; margin-top: 4px; font-size: 0.85em; }
.player[hidden] { display: none; }
.player input[type=range] { flex: 1 1 auto; min-width: 80px; }
.player button { font: inherit; padding: 1px 8px; cursor: pointer; }
.player .frame { min-width: 7em; text-align: right; font-variant-numeric: tabular-nums; }
.steps { flex: 1 1 360px; min-width: 300px; overflow: auto; position: relative; }
.steps table { font-size: 0.8em; }
.steps td.text { text-align: left; max-width: 300px; }
.steps td.action { max-width: 180px; }
.steps tr.truth td { text-align: left; color: #17607a; background: #eef7fb; font-size: 0.95em; }
.outcome { color: #8a5a00; }
.steps tr.now { background: #fff1b8; } .steps tr[data-time] { cursor: pointer; }
.label { display: inline-block; background: #334; color: #fff; border-radius: 3px; padding: 0 6px; margin-right: 4px; font-size: 0.85em; }
.ended { font-weight: 600; color: #8a5a00; }
.legend { max-width: 900px; }
"""

#: how the report names each chosen episode of a video (see :func:`mmrl.evaluate.choose_episodes`)
EPISODE_LABELS = {"first": "first episodes", "best": "best (highest return)", "median": "median return", "worst": "worst (lowest return)"}

#: The replays' player. Chromium draws a video's own controls over the bottom of the picture (and keeps them there
#: while paused), so the script swaps them for a bar below the video: play/pause, a frame back and forward, a slider
#: over the frames and the frame number; without scripts the video keeps its own controls. Clicking a row of a step
#: table shows that frame; the row of the frame shown is highlighted.
_STEP_SCRIPT = """
document.querySelectorAll('.replay').forEach(function (replay) {
  var video = replay.querySelector('video'), steps = replay.querySelector('.steps');
  var rows = replay.querySelectorAll('tr[data-step]'), player = replay.querySelector('.player');
  var play = player.querySelector('.play'), seek = player.querySelector('.seek'), label = player.querySelector('.frame');
  var fps = parseFloat(video.dataset.fps), last = parseInt(video.dataset.frames, 10) - 1;
  var poster = parseInt(video.dataset.posterFrame || '0', 10), started = false;
  video.removeAttribute('controls');
  player.hidden = false;
  function frame() {
    if (!started) return poster;  // the poster shows until the video first plays or seeks
    return Math.max(0, Math.min(last, Math.floor(video.currentTime * fps + 1e-6)));
  }
  function show(f) { started = true; video.pause(); video.currentTime = (Math.max(0, Math.min(last, f)) + 0.5) / fps; }
  function refresh() {
    var f = frame(), shown = null;
    seek.value = f; label.textContent = (started ? 'frame ' : 'poster: frame ') + f + '/' + last;
    play.textContent = video.paused ? '\u25B6 play' : '\u275A\u275A pause';
    rows.forEach(function (row) {
      var now = parseInt(row.dataset.step, 10) === f && !row.classList.contains('truth');
      row.classList.toggle('now', now); if (now) shown = row; });
    if (shown && (shown.offsetTop < steps.scrollTop || shown.offsetTop + shown.offsetHeight > steps.scrollTop + steps.clientHeight))
      steps.scrollTop = shown.offsetTop - steps.clientHeight / 3;
  }
  play.addEventListener('click', function () {
    if (!video.paused) { video.pause(); return; }
    if (!started || frame() >= last) video.currentTime = 0;
    started = true; video.play(); });
  player.querySelector('.prev').addEventListener('click', function () { show(frame() - 1); });
  player.querySelector('.next').addEventListener('click', function () { show(frame() + 1); });
  seek.addEventListener('input', function () { show(parseInt(seek.value, 10)); });
  video.addEventListener('click', function () { play.click(); });
  rows.forEach(function (row) { row.addEventListener('click', function () { show(parseInt(row.dataset.step, 10)); }); });
  ['timeupdate', 'play', 'pause', 'seeked', 'loadedmetadata'].forEach(function (e) { video.addEventListener(e, refresh); });
  refresh();
});
"""


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def _summary_cell(summary: Mapping[str, Any]) -> str:
    low, high = summary["ci95"]
    return f'{_fmt(summary["mean"])}<br><small>[{_fmt(low)}, {_fmt(high)}]</small>'


def versus_random(summary: Mapping[str, Any], random: Mapping[str, Any]) -> str:
    """``better``, ``worse`` or ``not better (intervals overlap)``: a policy's return against random's, by their
    95% intervals (overlapping intervals are no evidence of a difference)."""
    (low, high), (random_low, random_high) = summary["ci95"], random["ci95"]
    if low > random_high:
        return "better"
    if high < random_low:
        return "worse"
    return "not better (intervals overlap)"


def verdict(metrics: Mapping[str, Any]) -> tuple[str, bool]:
    """The report's headline for the evaluated policy: its share of the random-to-reference gap and whether it is
    better than random. Returns ``(html, warn)``; ``warn`` when it is not better than random."""
    policies = metrics["policies"]
    name = metrics["evaluated"]
    ret = policies[name]["episode_return"]
    esc = html.escape
    text = f"<b>{esc(name)}</b>: mean return {_fmt(ret['mean'])} [95% CI {_fmt(ret['ci95'][0])}, {_fmt(ret['ci95'][1])}]"
    reference = metrics.get("gap_reference")
    share = policies[name].get("share_of_gap")
    if reference and share is not None and "random" in policies:
        text += (f", <b>{100 * share:.0f}% of the way</b> from random ({_fmt(policies['random']['episode_return']['mean'])}) "
                 f"to {esc(reference)} ({_fmt(policies[reference]['episode_return']['mean'])}).")  # fmt: skip
    else:
        text += "."
    if name == "random" or "random" not in policies:
        return text, False
    random = policies["random"]["episode_return"]
    judged = versus_random(ret, random)
    interval = f"[{_fmt(random['ci95'][0])}, {_fmt(random['ci95'][1])}]"
    if judged == "better":
        return text + f" Better than random: its 95% interval lies above random's {interval}.", False
    if judged == "worse":
        return text + f" <b>Worse than random</b>: its 95% interval lies below random's {interval}.", True
    return text + f" <b>Not better than random</b>: its 95% interval overlaps random's {interval}.", True


def step_table(video: Mapping[str, Any]) -> str:
    """The per-step table of one replay, one row per decision: the step, the text the agent saw, the action it took
    on it (with the step's outcome under it: ``ended: ...`` on the episode's last action), the reward and the return
    after it; the last row is the final observation. A note row gives the hidden ground truth the agent could not
    see, above the first row it holds for. Row ``t`` is frame ``t`` of the video (a click shows it; the frame's panel
    shows the action that led to it, the row the one taken next).

    :param video: a ``videos`` entry of ``metrics.json``, whose ``steps`` are frame-aligned (:func:`mmrl.video.step_rows`)."""
    esc = html.escape
    fps = float(video["fps"])
    steps = list(video.get("steps", []))
    rows = ["<tr><th>step</th><th>text seen</th><th>action taken<br><small>outcome</small></th><th>reward</th><th>return</th></tr>"]
    previous = None
    for row, after in zip(steps, [*steps[1:], None]):
        step = row["step"]
        at = f'data-step="{step}" data-time="{(step + 0.5) / fps:.3f}"'
        truth = str(row.get("truth") or "")
        if truth and truth != previous:
            rows.append(f'<tr class="truth" {at}><td colspan="5"><b>hidden truth</b> (not seen by the agent): {esc(truth)}</td></tr>')
        previous = truth
        if after is None:
            action, reward, total = "<i>final observation</i>", "", row["return"]
        else:
            action, reward, total = esc(str(after["action"])), f"{after['reward']:+.2f}", after["return"]
            outcome = str(after.get("outcome") or "")
            if outcome:
                css = "ended" if outcome.startswith("ended:") else "outcome"
                action += f'<br><span class="{css}">{esc(outcome)}</span>'
        rows.append(
            f'<tr {at}><td>{step}</td><td class="text">{esc(str(row["text"]))}</td><td class="action">{action}</td>'
            f"<td>{reward}</td><td>{total:.2f}</td></tr>"
        )
    height = max(300, int(video.get("height", 0)) + 60)
    return f'<div class="steps" style="max-height:{height}px"><table>' + "".join(rows) + "</table></div>"


def replay_player(video: Mapping[str, Any]) -> str:
    """The controls under a replay (hidden until the script swaps them for the video's own, which cover the
    picture): play/pause, a frame back, a frame forward, a slider over the frames, the frame shown."""
    last = int(video["frames"]) - 1
    return (
        '<div class="player" hidden><button type="button" class="play">&#9654; play</button>'
        '<button type="button" class="prev" title="previous frame">&#9664; frame</button>'
        '<button type="button" class="next" title="next frame">frame &#9654;</button>'
        f'<input type="range" class="seek" min="0" max="{last}" step="1" value="0" aria-label="frame">'
        f'<span class="frame">frame 0/{last}</span></div>'
    )


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """The HTML table of every policy's metrics: mean and 95% CI of return and length, then task metrics."""
    policies: Mapping[str, Any] = metrics["policies"]
    first = next(iter(policies.values()))
    task_keys = list(first.get("task", {}))
    labels = task_labels(metrics.get("env", {}).get("id"))
    reference = metrics.get("gap_reference")
    head = ["policy", "episode return<br><small>mean [95% CI]</small>", "return std", "episode length<br><small>mean [95% CI]</small>"]
    if reference:
        head.append(f"share of the gap<br><small>random 0%, {html.escape(reference)} 100%</small>")
    compare = "random" in policies
    if compare:
        head.append("vs random<br><small>95% intervals</small>")
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
        if compare:
            cells.append("" if name == "random" else versus_random(values["episode_return"], policies["random"]["episode_return"]))
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
    histogram_image: str | None = None,
) -> str:
    """The HTML text of ``report.html``.

    :param metrics: the content of ``metrics.json`` (see :mod:`mmrl.evaluate`).
    :param curve_image: path of the learning-curve PNG relative to the report, or ``None``.
    :param curve_note: a sentence shown instead of (or under) the curve, e.g. why there is none.
    :param histogram_image: path of the episode-return histograms (PNG) relative to the report, or ``None``.
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
    ]
    headline, warn = verdict(metrics)
    parts += [f'<p class="verdict{" warn" if warn else ""}">{headline}</p>', "<h2>Learning curve</h2>"]
    if curve_image:
        parts.append(f'<img src="{esc(curve_image)}" alt="learning curve: mean episode return against env steps">')
    if curve_note:
        parts.append(f'<p class="note">{esc(curve_note)}</p>')
    parts += [
        "<h2>Metrics against the reference policies</h2>",
        metrics_table(metrics),
        '<p class="note">Same episodes (same seeds) for every policy. '
        + (
            "Regret vs oracle: the sum over a session of the best slot's expected reward minus the chosen one's. "
            if any("regret_vs_oracle" in values.get("task", {}) for values in metrics["policies"].values())
            else ""
        )
        + "Better or worse than random only where the 95% intervals "
        'do not overlap. Full numbers: <a href="metrics.json">metrics.json</a>; every episode\'s return: '
        '<a href="episode_returns.csv">episode_returns.csv</a>.</p>',
        "<h2>Distribution of episode returns</h2>",
    ]
    if histogram_image:
        parts.append(f'<img src="{esc(histogram_image)}" alt="histogram of episode returns, one per policy">')
    else:
        parts.append('<p class="note">No histogram: the per-episode returns were not given.</p>')
    parts.append("<h2>Replays</h2>")
    videos = metrics.get("videos", [])
    replay = metrics.get("replay", {})
    if not videos:
        parts.append('<p class="note">No videos (video.episodes=0).</p>')
    else:
        if replay.get("legend"):
            parts.append(f'<p class="legend"><b>Legend.</b> {esc(replay["legend"])}</p>')
        acted_on = "the observation the action was taken on (the chosen slot outlined)" if replay.get("action_outlined") else "the observation the action was taken on"
        parts.append(
            f'<p class="note">Each frame: left, {acted_on}; right, the observation that followed; the panel shows the '
            "text, the action, the reward and the return so far, then, in colour, what the agent could not see: the "
            "step's outcome (\"ended: ...\" and why, on the last frame) and the hidden ground truth. Frame 0 is the "
            "first observation, the last frame the final one. The table beside each video lists every step with the "
            "same outcome and truth: click a row to see its frame.</p>"
        )
        for video in videos:
            labels = "".join(f'<span class="label">{esc(EPISODE_LABELS.get(label, label))}</span>' for label in video.get("labels", []))
            caption = (f"{labels} episode {video['episode']} (seed {video['seed']}): return {video['return']:.2f}, "
                       f"{video['length']} steps, {video['frames']} frames at {video['fps']} fps")  # fmt: skip
            if video.get("end"):
                caption += f', <span class="ended">ended: {esc(video["end"])}</span>'
            if video.get("reproduced") is False:
                caption += " (replayed with the same seed; this replay's return differs from the evaluation's)"
            poster = f' poster="{esc(video["poster"])}"' if video.get("poster") else ""
            parts.append(
                f'<div class="replay"><figure style="max-width:{video["width"]}px"><figcaption>{caption}</figcaption>'
                f'<video controls preload="auto" width="{video["width"]}" height="{video["height"]}"{poster} '
                f'data-fps="{video["fps"]}" data-frames="{video["frames"]}" data-poster-frame="{video.get("poster_frame", 0)}" '
                f'src="{esc(video["file"])}"></video>'
                f"{replay_player(video)}</figure>{step_table(video)}</div>"
            )
        parts.append(f"<script>{_STEP_SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    out_dir: str | os.PathLike[str],
    metrics: Mapping[str, Any],
    run_dir: str | os.PathLike[str] | None = None,
    title: str = "mmrl evaluation",
    episode_returns: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write ``report.html`` (and ``learning_curve.png`` when the run has logs, ``returns.png`` when the episodes'
    returns are given) into ``out_dir``.

    :param run_dir: the training run, searched for logs; ``None`` for a policy-only evaluation.
    :param episode_returns: each policy's return in each episode, for the histograms."""
    out_dir = Path(out_dir)
    histogram = None
    if episode_returns:
        plot_return_histograms(episode_returns, out_dir / "returns.png", evaluated=metrics.get("evaluated"))
        histogram = "returns.png"
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
    return atomic_write_text(out_dir / "report.html", render_report(metrics, curve_image, note, title, histogram))
