"""Evaluation (issue #5): ``python -m mmrl.evaluate`` metrics, replay videos, report, errors.

Most tests call :func:`mmrl.evaluate.main` in-process (the same code path as the CLI, without paying the imports
again); one smoke test runs ``python -m mmrl.evaluate`` through ``subprocess``. Runs are tiny: a few dozen
episodes of Recommend in the setting of ``configs/env/recommend.yaml`` (the evaluation's default env), and a PPO run of 256 steps trained here.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import mmrl
from mmrl.agents.reference import make_reference_policy
from mmrl.core.frames import PANEL_WIDTH
from mmrl.episodes import run_episodes
from mmrl.evaluate import EvaluationError, compose_config, main, write_evaluation
from mmrl.metrics import summarize, t_quantile_975
from mmrl.video import CAPTION_HEIGHT, video_codec
from tests.conftest import env_options

ENV_ID = "mmrl/Recommend-v0"
OPTIONS = env_options("recommend")  # what policy= evaluations use by default
SEED = 500
EPISODES = 64
SUMMARY_KEYS = {"mean", "std", "ci95", "min", "max", "n"}


def make_tiny_run(run_dir: Path, seed: int = 0, timesteps: int = 256) -> Path:
    """A run directory in the train CLI's layout: ``config.yaml`` (the full training config), ``best_model.zip`` (a
    PPO with :class:`mmrl.MultimodalExtractor` trained for ``timesteps`` steps) and SB3's ``progress.csv``."""
    from stable_baselines3.common.logger import configure

    from mmrl.train import build_model, compose_config, make_train_env

    run_dir.mkdir(parents=True)
    config = compose_config([
        "n_envs=4", "algo.hyperparams.n_steps=32", "algo.hyperparams.batch_size=64", "algo.hyperparams.n_epochs=1",
        "extractor.features_dim=32", "extractor.text_dim=16", "algo.policy_kwargs.net_arch=[32]", f"seed={seed}",
        "device=cpu", f"run_dir={run_dir}",
    ])  # fmt: skip
    model = build_model(config, make_train_env(config, "cpu"), "cpu")
    model.set_logger(configure(str(run_dir), ["csv"]))
    model.learn(timesteps)
    model.save(run_dir / "best_model.zip")
    OmegaConf.save(OmegaConf.create(dataclasses.asdict(config)), run_dir / "config.yaml")
    return run_dir


def run_cli(args: list[str]) -> Path:
    """``main(args)`` must succeed; returns the folder it wrote (the last line of its output names it)."""
    assert main(args) == 0
    out = [a.split("=", 1)[1] for a in args if a.startswith("out=")]
    return Path(out[0]) if out else Path()


def load_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def decode(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


@pytest.fixture(scope="module")
def oracle_eval(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``policy=oracle``: 64 episodes seeded 500.., videos of the first two at scale 2."""
    out = tmp_path_factory.mktemp("oracle") / "eval"
    run_cli(["policy=oracle", f"episodes={EPISODES}", f"seed={SEED}", "video.episodes=2", "video.scale=2", f"out={out}"])
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("runs") / "tiny")


# ---------------------------------------------------------------------------------------------- metrics
def test_summary_statistics() -> None:
    assert t_quantile_975(5) == pytest.approx(2.571, abs=1e-3)
    assert t_quantile_975(100) == pytest.approx(1.984, abs=1e-3)
    assert t_quantile_975(10_000) == pytest.approx(1.960, abs=1e-3)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    s = summarize(x)
    half = 3.182 * x.std(ddof=1) / 2
    assert s["mean"] == 2.5 and s["std"] == pytest.approx(x.std(ddof=1))
    assert s["ci95"] == pytest.approx([2.5 - half, 2.5 + half])
    assert summarize(np.array([7.0]))["ci95"] == [7.0, 7.0]


def test_metrics_schema_and_oracle_values(oracle_eval: Path) -> None:
    metrics = load_metrics(oracle_eval)
    assert metrics["evaluated"] == "oracle" and metrics["source"] == {"kind": "policy", "policy": "oracle"}
    assert metrics["env"] == {"name": "recommend", "id": ENV_ID, "options": OPTIONS}
    assert metrics["episodes"] == EPISODES and metrics["seeds"] == [SEED, SEED + EPISODES - 1]
    assert list(metrics["policies"]) == ["oracle", "random", "greedy"]
    for values in metrics["policies"].values():
        for key in ("episode_return", "episode_length"):
            summary = values[key]
            assert set(summary) == SUMMARY_KEYS and summary["n"] == EPISODES
            assert summary["ci95"][0] <= summary["mean"] <= summary["ci95"][1]
        assert set(values["task"]) >= {"click_through_rate", "revenue_per_episode", "session_length", "regret_vs_oracle"}
        assert 0.0 <= values["task"]["click_through_rate"] <= 1.0

    # the same numbers as run_episodes on the same seeds
    env = mmrl.make_batched(ENV_ID, num_envs=EPISODES, **OPTIONS)
    policy = make_reference_policy("oracle", env)
    stats = run_episodes(env, policy.act, seed=SEED, update=policy.update, sum_keys=("clicked", "revenue", "regret"))
    oracle = metrics["policies"]["oracle"]
    assert oracle["episode_return"]["mean"] == pytest.approx(stats.returns.mean())
    assert oracle["episode_return"]["std"] == pytest.approx(stats.returns.std(ddof=1))
    assert oracle["episode_length"]["mean"] == pytest.approx(stats.lengths.mean())
    assert oracle["task"]["click_through_rate"] == pytest.approx(stats.sums["clicked"].sum() / stats.lengths.sum())
    assert oracle["task"]["revenue_per_episode"]["mean"] == pytest.approx(stats.sums["revenue"].mean())
    assert oracle["task"]["session_length"]["mean"] == pytest.approx(stats.lengths.mean())
    assert oracle["task"]["regret_vs_oracle"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert oracle["task"]["regret_vs_oracle"]["max"] == pytest.approx(0.0, abs=1e-9)


def test_reference_policies_are_ordered(oracle_eval: Path) -> None:
    returns = {k: v["episode_return"]["mean"] for k, v in load_metrics(oracle_eval)["policies"].items()}
    assert returns["oracle"] >= returns["greedy"] >= returns["random"], returns
    regrets = {k: v["task"]["regret_vs_oracle"]["mean"] for k, v in load_metrics(oracle_eval)["policies"].items()}
    assert regrets["random"] > 0 and regrets["greedy"] > 0


# ---------------------------------------------------------------------------------------------- videos
def test_videos_decode_with_one_frame_per_observation(oracle_eval: Path) -> None:
    metrics = load_metrics(oracle_eval)
    env = mmrl.make_batched(ENV_ID, num_envs=EPISODES, **OPTIONS)
    policy = make_reference_policy("oracle", env)
    lengths = run_episodes(env, policy.act, seed=SEED, update=policy.update).lengths
    assert [v["episode"] for v in metrics["videos"] if "first" in v["labels"]] == [0, 1]
    scale = 2
    picture_height = 32 * scale + CAPTION_HEIGHT  # the frames grow below the pictures where the panel needs more
    width = 2 * 32 * scale + 4 + PANEL_WIDTH
    for video in metrics["videos"]:
        path = oracle_eval / video["file"]
        i = video["episode"]
        assert video["seed"] == SEED + i and video["length"] == lengths[i]
        frames = decode(path)
        assert len(frames) == lengths[i] + 1 == video["frames"]
        assert frames[0].shape == (video["height"], width + width % 2, 3) == (video["height"], video["width"], 3)
        assert video["height"] >= picture_height and video["height"] % 2 == 0
        assert video_codec(path) == "h264"


def test_same_seed_same_video_and_a_new_folder(oracle_eval: Path) -> None:
    again = run_cli(["policy=oracle", f"episodes={EPISODES}", f"seed={SEED}", "video.episodes=2", "video.scale=2", f"out={oracle_eval}"])
    second = again.with_name(again.name + "-1")
    assert second.is_dir() and (oracle_eval / "metrics.json").is_file(), "the first evaluation must stay"
    assert load_metrics(second)["policies"] == load_metrics(oracle_eval)["policies"]
    for video in load_metrics(oracle_eval)["videos"]:
        first, other = oracle_eval / video["file"], second / video["file"]
        assert first.read_bytes() == other.read_bytes()
        assert all(np.array_equal(a, b) for a, b in zip(decode(first), decode(other), strict=True))


# ---------------------------------------------------------------------------------------------- report
def test_policy_report_is_self_contained(oracle_eval: Path) -> None:
    page = (oracle_eval / "report.html").read_text()
    assert "No learning curve" in page and "learning_curve.png" not in page
    for video in load_metrics(oracle_eval)["videos"]:
        assert f'src="{video["file"]}"' in page and (oracle_eval / video["file"]).is_file()
    assert "<video controls" in page and "http://" not in page and "https://" not in page
    for name in ("oracle", "random", "greedy"):
        assert f"<td>{name}" in page


def test_videos_are_the_first_best_median_and_worst_episodes(oracle_eval: Path) -> None:
    """The evaluation finds each episode's return, then replays the chosen seeds to record them: the first ones,
    the best, the median and the worst, each labelled, with the same return as in the evaluation."""
    metrics = load_metrics(oracle_eval)
    with open(oracle_eval / "episode_returns.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == EPISODES and rows[3]["seed"] == str(SEED + 3) and set(rows[0]) >= {"oracle", "random", "greedy"}
    returns = np.array([float(r["oracle"]) for r in rows])
    labelled = {label: v["episode"] for v in metrics["videos"] for label in v["labels"] if label != "first"}
    assert set(labelled) == {"best", "median", "worst"}
    assert returns[labelled["best"]] == returns.max() and returns[labelled["worst"]] == returns.min()
    assert returns[labelled["median"]] == np.sort(returns)[(EPISODES - 1) // 2]
    assert len({v["episode"] for v in metrics["videos"]}) == len(metrics["videos"]), "one video per episode"
    for video in metrics["videos"]:
        assert video["reproduced"] and video["return"] == pytest.approx(returns[video["episode"]], abs=1e-4)
        assert video["file"] == f"videos/episode-{video['episode']:04d}.mp4"
        steps = video["steps"]
        assert [s["step"] for s in steps] == list(range(video["frames"])) and steps[0]["action"] is None
        assert steps[-1]["return"] == pytest.approx(video["return"], abs=1e-3) and steps[1]["action"].startswith("slot ")
        poster = cv2.imread(str(oracle_eval / video["poster"]))
        frames = decode(oracle_eval / video["file"])
        assert poster.shape == frames[0].shape, "the poster is a frame of the video"
        middle = frames[max(1, len(frames) // 2)] if len(frames) > 1 else frames[0]
        assert np.abs(poster.astype(int) - middle.astype(int)).mean() < 8, "... from the middle of the episode"


def test_chosen_episodes() -> None:
    from mmrl.evaluate import choose_episodes

    returns = np.array([3.0, 1.0, 5.0, 5.0, 2.0])
    assert choose_episodes(returns, 2) == {0: ["first", "median"], 1: ["first", "worst"], 2: ["best"]}
    assert choose_episodes(returns, 0) == {2: ["best"], 0: ["median"], 1: ["worst"]}, "the lowest row among ties"
    assert choose_episodes(returns, 0, chosen=False) == {}
    assert choose_episodes(np.array([1.0]), 3) == {0: ["first", "best", "median", "worst"]}


def test_report_shows_the_gap_the_verdict_the_histogram_and_the_replays(oracle_eval: Path) -> None:
    page = (oracle_eval / "report.html").read_text()
    assert '<p class="verdict">' in page and "100% of the way</b> from random" in page and "Better than random" in page
    assert '<img src="returns.png"' in page and (oracle_eval / "returns.png").stat().st_size > 2000
    assert "vs random" in page and "<td>better</td>" in page
    for label in ("first episodes", "best (highest return)", "median return", "worst (lowest return)"):
        assert f'<span class="label">{label}</span>' in page
    assert 'poster="videos/episode-0000-poster.png"' in page
    assert page.index("<figcaption>") < page.index("<video"), "the caption is above the video, clear of its controls"
    assert "<th>step</th><th>text seen</th><th>action taken<br><small>outcome</small></th>" in page and "data-time=" in page
    assert "<b>hidden truth</b> (not seen by the agent): wants a " in page and '<b class="ended">' not in page
    assert '<span class="ended">ended: ' in page and "<i>final observation</i>" in page
    assert "<b>Legend.</b> The image is the slate" in page and "pips (1-4) = price tier" in page
    assert "(the chosen slot outlined)" in page


def test_each_video_sits_beside_its_step_table_with_its_controls_below_the_picture(oracle_eval: Path) -> None:
    """One flex row per replay, wrapping on narrow screens: the figure (caption, video, the player's bar under it)
    and then the step table; the script swaps the video's own controls, which Chromium draws over the bottom of
    the picture, for that bar (tests/test_browser.py measures it)."""
    page = (oracle_eval / "report.html").read_text()
    assert ".replay { display: flex; flex-wrap: wrap;" in page and ".steps { flex: 1 1 360px;" in page
    videos = load_metrics(oracle_eval)["videos"]
    assert page.count('<div class="replay">') == len(videos)
    for block in page.split('<div class="replay">')[1:]:
        figure, rest = block.split("</figure>", 1)
        assert "<figcaption>" in figure and "<video controls" in figure and '<div class="player" hidden>' in figure
        assert figure.index("<video") < figure.index('class="player"'), "the bar comes under the video"
        assert rest.startswith('<div class="steps"'), "the table follows the figure in the same flex row"
    assert "video.removeAttribute('controls')" in page and "player.hidden = false" in page


#: each env's setting, its policy, and what the hidden truth of a row names, read from its state after a reset
TRUTH_CASES = {
    "diagnose": ("random", lambda env, row: env.conditions[2 * int(env.state.finding[row]) + (0 if bool(env.state.infection[row]) else 1)]),
    "navigate": ("oracle", lambda env, row: f"{env.colours[int(env.state.colour[row, 0])]} {env.kinds[int(env.state.kind[row, 0])]}"),
    "recommend": ("random", lambda env, row: f"wants a {env.catalog.colours[int(env.state.want_colour[row])]} "
                                             f"{env.catalog.categories[int(env.state.want_category[row])]}"),
    "recommend_long": ("myopic", lambda env, row: f"trust {int(env.state.trust[row])}/{env.params.trust_levels}"),
    "tutor": ("random", lambda env, row: f"{env.skills[0]}* {int(env.state.level[row, 0])}/3"),
}  # fmt: skip


@pytest.mark.parametrize("env_name", sorted(TRUTH_CASES))
def test_replays_show_each_env_s_hidden_truth_and_why_episodes_end(env_name: str, tmp_path: Path) -> None:
    """Every env's replays (panel and step table) carry what the agent could not see, in the env's own words
    (``describe_truth``: the patient's condition, the target and verb, the shopper's wish, trust, mastery), and the
    last frame says why the episode ended (``describe_end`` of the ``end_reason`` the episode really ended with)."""
    from mmrl.configs.schema import EnvConfig
    from mmrl.core.batched_env import select_rows
    from mmrl.evaluate import EvaluateConfig, VideoConfig
    from mmrl.video import END_COLOUR, TRUTH_COLOUR, EpisodeRecorder, replay_frames

    policy, names = TRUTH_CASES[env_name]
    options = env_options(env_name)
    env_id = "mmrl/Recommend-v0" if env_name == "recommend_long" else f"mmrl/{env_name.capitalize()}-v0"
    episodes, seed = 6, 40
    config = EvaluateConfig(env=EnvConfig(name=env_name, id=env_id, options=options), policy=policy, episodes=episodes,
                            seed=seed, baselines=["random"], video=VideoConfig(episodes=2, chosen=False, scale=2),
                            out=str(tmp_path / "ev"))  # fmt: skip
    metrics = load_metrics(write_evaluation(config))

    # the truth at the start, and the end reason each episode really ends with, from a run of the same seeds
    env = mmrl.make_batched(env_id, num_envs=episodes, **options)
    env.reset(seed=seed)
    starts = [env.describe_truth(select_rows(env.state, torch.tensor([row]))) for row in range(episodes)]
    names_at_start = [names(env, row) for row in range(episodes)]
    ends: dict[int, int] = {}

    def note_ends(info: dict, done: torch.Tensor) -> None:
        for row in torch.nonzero(done).flatten().tolist():
            ends.setdefault(row, int(info["end_reason"][row]))

    actor = make_reference_policy(policy, env, seed=seed)
    run_episodes(env, actor.act, seed=seed, update=lambda info, done: (actor.update(info, done), note_ends(info, done)))
    assert len(metrics["videos"]) == 2
    for video in metrics["videos"]:
        row, steps = video["episode"], video["steps"]
        assert steps[0]["truth"] == starts[row] and names_at_start[row] in steps[0]["truth"], (steps[0], names_at_start[row])
        assert all(step["truth"] for step in steps), "every frame has its truth"
        words = env.describe_end(ends[row])
        assert video["end"] == words and steps[-1]["outcome"] == f"ended: {words}", (video["end"], words)
        assert all(not step["outcome"].startswith("ended:") for step in steps[:-1])

    # the frames' panel draws them (in their colours), every line on the frame
    env = mmrl.make_batched(env_id, num_envs=episodes, **options)
    recorder = EpisodeRecorder(env, [0], seed)
    actor = make_reference_policy(policy, env, seed=seed)
    run_episodes(env, recorder.wrap_act(actor.act), seed=seed, update=recorder.wrap_update(actor.update))
    trajectory = recorder.trajectories[0]
    frames = replay_frames(env, trajectory, scale=2)
    assert len({f.shape for f in frames}) == 1
    panel = (frames[-1].shape[1] - PANEL_WIDTH) // 2 * 2

    def has(frame: np.ndarray, colour: tuple[int, int, int]) -> bool:
        return bool((np.abs(frame[:, panel:].astype(int) - colour).max(axis=2) < 8).sum() > 20)

    assert all(has(frame, TRUTH_COLOUR) for frame in frames), "each frame shows the truth"
    assert has(frames[-1], END_COLOUR) and trajectory.end and trajectory.done
    # the whole panel fits: the last line drawn sits above the frame's bottom margin
    rows_drawn = np.flatnonzero((frames[-1][:, panel + 8 :] > 100).any(axis=(1, 2)))
    assert rows_drawn.max() < frames[-1].shape[0] - 4


def test_the_last_frame_s_truth_is_the_state_the_last_step_left() -> None:
    """The engine restarts a finished row within the step; the recorder reads the episode's last state from
    ``successor`` (the same transition on a copy of the row): Tutor's patience is 0 on the frame where the student
    quits (0 or below), not what it was before."""
    from mmrl.video import EpisodeRecorder

    env = mmrl.make_batched("mmrl/Tutor-v0", num_envs=16, **env_options("tutor"))
    recorder = EpisodeRecorder(env, 16, seed=3)
    actor = make_reference_policy("myopic", env, seed=3)
    run_episodes(env, recorder.wrap_act(actor.act), seed=3, update=recorder.wrap_update(actor.update))
    quits = [t for t in recorder.trajectories if t.end.startswith("the student quit")]
    assert quits, [t.end for t in recorder.trajectories]
    for trajectory in quits:
        before, last = (int(re.search(r"; patience (-?\d+);", truth).group(1)) for truth in trajectory.truths[-2:])
        assert last <= 0 < before, trajectory.truths[-2:]
        assert len(trajectory.truths) == len(trajectory.images) == trajectory.length + 1


def test_end_words_without_an_end_reason() -> None:
    """An env whose info has no ``end_reason`` still gets an end in its replays: the step limit by the length."""
    from mmrl.video import end_words

    env = mmrl.make_batched(ENV_ID, num_envs=2, **OPTIONS)
    info = {"episode_length": torch.tensor([env.max_episode_steps, 3])}
    assert end_words(env, info, 0, finished=True) == "out of steps (step limit)"
    assert end_words(env, info, 1, finished=True) == "terminated" and end_words(env, info, 1, finished=False) == ""
    info["end_reason"] = torch.tensor([2, 1])
    assert end_words(env, info, 0, finished=True) == f"out of steps (step limit {env.max_episode_steps})"
    assert end_words(env, info, 1, finished=True) == "shopper left"


@pytest.mark.parametrize("env_id", sorted(mmrl.ENV_CLASSES))
def test_successor_is_the_state_the_step_leaves(env_id: str) -> None:
    """``successor(rows, actions)`` equals the state ``step`` leaves in those rows (before any autoreset)."""
    from mmrl.core.batched_env import select_rows

    env = mmrl.make_batched(env_id, num_envs=8)
    env.reset(seed=11)
    rows = torch.tensor([1, 4, 6])
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        actions = torch.randint(0, int(env.single_action_space.n), (8,), generator=generator)
        expected = env.successor(rows, actions[rows])
        _, _, terminated, truncated, _ = env.step(actions, autoreset=False)
        after = select_rows(env.state, rows)
        for f in dataclasses.fields(after):
            assert torch.equal(getattr(expected, f.name), getattr(after, f.name)), (env_id, f.name)
        done = terminated | truncated
        if bool(done.any()):
            env.reset(mask=done)


@pytest.mark.parametrize(("env_name", "legend"), [("navigate", "white triangle"), ("diagnose", "chest scan")])
def test_reports_of_other_envs_have_their_legend(env_name: str, legend: str, tmp_path: Path) -> None:
    out = run_cli([f"env={env_name}", "policy=random", "episodes=8", "video.episodes=1", "video.scale=2",
                   "baselines=[random]", f"out={tmp_path / 'ev'}"])  # fmt: skip
    page = (out / "report.html").read_text()
    assert legend in page and "slot outlined" not in page
    assert load_metrics(out)["replay"] == {"legend": mmrl.make_batched(f"mmrl/{env_name.capitalize()}-v0").legend,
                                           "action_outlined": False}  # fmt: skip


def test_verdict_says_plainly_when_the_agent_is_not_better_than_random() -> None:
    from mmrl.report import render_report

    def policy(mean: float, low: float, high: float, share: float) -> dict:
        summary = {"mean": mean, "std": 1.0, "ci95": [low, high], "min": 0.0, "max": 9.0, "n": 100}
        return {"episode_return": summary, "episode_length": summary, "task": {}, "share_of_gap": share}

    metrics = {
        "evaluated": "agent", "source": {"kind": "run", "run_dir": "runs/x"}, "env": {"id": ENV_ID, "options": {}},
        "episodes": 100, "seeds": [0, 99], "deterministic": True, "gap_reference": "oracle", "videos": [],
        "policies": {"agent": policy(2.2, 1.9, 2.5, 0.02), "random": policy(2.0, 1.7, 2.3, 0.0), "oracle": policy(12.0, 11.0, 13.0, 1.0)},
    }  # fmt: skip
    page = render_report(metrics)
    assert '<p class="verdict warn">' in page and "2% of the way</b> from random (2.000) to oracle (12.000)" in page
    assert "<b>Not better than random</b>: its 95% interval overlaps random's [1.700, 2.300]" in page
    assert "<td>not better (intervals overlap)</td>" in page
    metrics["policies"]["agent"] = policy(1.0, 0.8, 1.2, -0.1)
    assert "<b>Worse than random</b>" in render_report(metrics)


# ---------------------------------------------------------------------------------------------- agent runs
def test_agent_run(tiny_run: Path) -> None:
    assert main(["run=" + str(tiny_run), "episodes=16", "video.episodes=1"]) == 0
    assert main(["run=" + str(tiny_run), "episodes=16", "video.episodes=1"]) == 0
    folders = sorted(tiny_run.glob("eval-*"))
    assert len(folders) == 2, "each evaluation writes a new folder"
    first, second = (load_metrics(f) for f in folders)
    assert first["evaluated"] == "agent" and first["source"]["model"] == "best_model.zip" and first["source"]["algo"] == "ppo"
    assert list(first["policies"]) == ["agent", "random", "greedy", "oracle"]
    assert first["policies"] == second["policies"], "a deterministic policy on the same seeds gives the same numbers"
    oracle, agent = first["policies"]["oracle"], first["policies"]["agent"]
    assert agent["episode_return"]["mean"] <= oracle["episode_return"]["mean"]
    assert agent["task"]["regret_vs_oracle"]["mean"] >= 0
    video = first["videos"][0]
    assert len(decode(folders[0] / video["file"])) == video["length"] + 1
    page = (folders[0] / "report.html").read_text()
    assert '<img src="learning_curve.png"' in page and (folders[0] / "learning_curve.png").stat().st_size > 1000
    assert "progress.csv" in page
    assert "of the way</b> from random" in page and ("Better than random" in page or "ot better than random" in page
                                                      or "Worse than random" in page)  # fmt: skip
    assert first["policies"]["agent"]["better_than_random"] in (True, False)



def test_loading_a_run_does_not_warn_about_the_training_batch(tiny_run: Path, tmp_path: Path) -> None:
    """The model is rebuilt on one instance (a 32-step rollout against the run's 64-sample batches): SB3 would warn
    about a truncated mini-batch, which means nothing for an evaluation."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([f"run={tiny_run}", "episodes=4", "video.episodes=0", "video.chosen=false", f"out={tmp_path / 'ev'}"]) == 0
    assert not [w for w in caught if "mini-batch" in str(w.message)], [str(w.message) for w in caught]

def test_stochastic_agent_replays_reproduce_the_evaluated_episodes(tiny_run: Path, tmp_path: Path) -> None:
    """With sampled actions the chosen episodes are replayed after the same torch seed: the same returns."""
    out = run_cli([f"run={tiny_run}", "episodes=16", "video.episodes=1", "deterministic=false", "baselines=[random]",
                   f"out={tmp_path / 'ev'}"])  # fmt: skip
    videos = load_metrics(out)["videos"]
    assert len(videos) >= 2 and all(v["reproduced"] for v in videos), videos


def test_final_model_when_no_best(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes((tiny_run / "config.yaml").read_bytes())
    (run / "final_model.zip").write_bytes((tiny_run / "best_model.zip").read_bytes())
    out = run_cli([f"run={run}", "episodes=4", "video.episodes=0", f"out={tmp_path / 'ev'}", "baselines=[]"])
    metrics = load_metrics(out)
    assert metrics["source"]["model"] == "final_model.zip" and list(metrics["policies"]) == ["agent"]
    assert "No learning curve" in (out / "report.html").read_text()


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("case", ["missing", "not_a_run", "corrupt_yaml", "no_env", "no_model", "corrupt_model"])
def test_bad_run_directory_gives_a_clear_error(case: str, tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    expected = {
        "missing": "does not exist",
        "not_a_run": "config.yaml",
        "corrupt_yaml": "corrupt",
        "no_env": "env.id",
        "no_model": "neither best_model.zip nor final_model.zip exists",
        "corrupt_model": "no loadable model .* best_model.zip: ",
    }[case]
    if case != "missing":
        run.mkdir()
    if case in ("no_model", "corrupt_model"):
        (run / "config.yaml").write_bytes((tiny_run / "config.yaml").read_bytes())
    if case == "corrupt_yaml":
        (run / "config.yaml").write_text("env: {id: [unclosed\n")
    if case == "no_env":
        (run / "config.yaml").write_text("algo: {name: ppo}\nseed: 0\n")
    if case == "corrupt_model":
        (run / "best_model.zip").write_bytes(b"not a zip file")
    with pytest.raises(EvaluationError, match=expected) as error:
        write_evaluation(compose_config([f"run={run}", "episodes=2"]))
    assert str(run) in str(error.value)
    if run.exists():
        assert not list(run.glob("eval-*")), "a failed evaluation leaves no folder behind"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["episdes=3"], "unknown key 'episdes' (did you mean 'episodes'?)"),
        (["video.episods=1", "policy=oracle"], "unknown key 'video.episods' (did you mean 'video.episodes'?)"),
        (["env=navgate", "policy=oracle"], "env=navgate: no such env config (did you mean 'navigate'?)"),
        (["policy=oracel"], "has no reference policy ['oracel'] (did you mean 'oracle'?)"),
        (["policy=oracle", "env.options.slate_sze=3"], "has no option 'slate_sze'; valid options: ['betrayal',"),
    ],
)
def test_typos_fail_with_a_did_you_mean(args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main([*args, f"out={tmp_path / 'ev'}"]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "nothing is written"


def test_bad_key_names_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["episdes=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'episdes'" in err and "episodes" in err and "video.episodes" in err
    assert main(["policy=best"]) == 2
    err = capsys.readouterr().err
    assert "no reference policy ['best']" in err and "'random'" in err and "'oracle'" in err
    assert main(["env=nope", "policy=oracle"]) == 2
    assert "recommend" in capsys.readouterr().err


def test_cli_smoke(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    result = subprocess.run(
        [sys.executable, "-m", "mmrl.evaluate", "policy=random", "episodes=4", "video.episodes=1", f"out={out}"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "random" in result.stdout and str(out) in result.stdout
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "report.html", "videos"}


def test_the_planner_is_a_baseline_where_the_env_offers_one(tmp_path: Path) -> None:
    """On Recommend's long-term setting every reference the env offers runs by default, and the gap is measured
    from random to the planner."""
    out = run_cli(["env=recommend_long", "policy=myopic", "episodes=6", "video.episodes=0", f"out={tmp_path / 'ev'}"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["policies"]) == ["myopic", "random", "greedy", "careful", "oracle", "planner"]
    assert metrics["gap_reference"] == "planner" and metrics["policies"]["planner"]["share_of_gap"] == 1.0
    assert "share of the gap" in (out / "report.html").read_text()


def _with_payload(zip_path: Path, marker: Path) -> None:
    """Put a pickle into the zip's ``data`` entry that creates ``marker`` when unpickled (what an attacker would do)."""
    import base64
    import pickle
    import zipfile

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    with zipfile.ZipFile(zip_path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(entries["data"])
    data["policy_kwargs"] = {":type:": "<class 'dict'>", ":serialized:": base64.b64encode(pickle.dumps(Payload())).decode()}
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(zip_path, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)


def test_a_model_file_from_someone_else_runs_no_code(tiny_run: Path, tmp_path: Path) -> None:
    """The model is built from config.yaml and only the zip's tensors are read: a pickle in the zip never runs,
    unless the user opts in with unsafe_pickle=true (then it does: the payload is real)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes((tiny_run / "config.yaml").read_bytes())
    (run / "best_model.zip").write_bytes((tiny_run / "best_model.zip").read_bytes())
    marker = tmp_path / "payload-ran"
    _with_payload(run / "best_model.zip", marker)
    safe = run_cli([f"run={run}", "episodes=4", "video.episodes=0", f"out={tmp_path / 'safe'}", "baselines=[]"])
    assert not marker.exists()
    reference = run_cli([f"run={tiny_run}", "episodes=4", "video.episodes=0", f"out={tmp_path / 'ref'}", "baselines=[]"])
    assert load_metrics(safe)["policies"] == load_metrics(reference)["policies"], "the same weights, the same episodes"
    with pytest.raises(Exception):  # the payload replaces policy_kwargs, so SB3 cannot build the policy after it ran
        run_cli([f"run={run}", "episodes=4", "video.episodes=0", f"out={tmp_path / 'unsafe'}", "unsafe_pickle=true"])
    assert marker.exists()


def test_a_damaged_best_model_falls_back_to_the_final_one(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes((tiny_run / "config.yaml").read_bytes())
    good = (tiny_run / "best_model.zip").read_bytes()
    (run / "best_model.zip").write_bytes(good[: len(good) // 2])  # a copy cut short
    (run / "final_model.zip").write_bytes(good)
    out = run_cli([f"run={run}", "episodes=4", "video.episodes=0", f"out={tmp_path / 'ev'}", "baselines=[]"])
    source = load_metrics(out)["source"]
    assert source["model"] == "final_model.zip" and source["skipped_models"][0].startswith("best_model.zip: ")


def test_the_output_folder_appears_only_when_complete(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The evaluation is written in a hidden folder and renamed into place at the end: while it runs (or after it
    fails, or is killed) no folder under the final name holds a metrics.json that looks final."""
    import mmrl.report

    final = tmp_path / "ev"
    seen = []
    original = mmrl.report.write_report

    def checking(out_dir: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((out_dir.name, final.exists()))
        return original(out_dir, *args, **kwargs)

    monkeypatch.setattr(mmrl.report, "write_report", checking)
    out = run_cli(["policy=random", "episodes=4", "video.episodes=0", f"out={final}"])
    assert out == final and (final / "metrics.json").is_file() and (final / "report.html").is_file()
    assert seen == [(".ev.partial", False)]
    assert [p.name for p in tmp_path.iterdir()] == ["ev"], "no partial folder is left"

    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk full")

    monkeypatch.setattr(mmrl.report, "write_report", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_evaluation(compose_config(["policy=random", "episodes=4", "video.episodes=0", f"out={tmp_path / 'broken'}"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ev"], "a failed evaluation leaves nothing behind"
