"""Smoke runs of the training CLI (``python -m mmrl.train``) through ``subprocess``, with tiny budgets.

Each run uses 4 envs and 16-step rollouts (64 env steps per PPO iteration), so the step counts below are
multiples of 64. Run directories go under pytest's ``tmp_path``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mmrl
from mmrl.agents import builders
from mmrl.checkpoints import CHECKPOINT_DIR, Checkpoint, list_checkpoints, load_latest_checkpoint
from mmrl.runs import atomic_write
from mmrl.train import build_model, make_train_env, saved_train_config
from tests.conftest import env_options

#: a small, fast run: 4 envs x 16 steps per rollout, a tiny extractor, 8 evaluation episodes
TINY = [
    "n_envs=4", "algo.hyperparams.n_steps=16", "algo.hyperparams.batch_size=32", "algo.hyperparams.n_epochs=1",
    "extractor.features_dim=32", "extractor.text_dim=16", "eval_episodes=8", "progress=false",
]  # fmt: skip
ROLLOUT = 4 * 16


def run_train(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m mmrl.train *args`` in ``cwd``."""
    env = dict(os.environ, HYDRA_FULL_ERROR="0", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "mmrl.train", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def check_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny PPO run: 320 steps, evaluation every 128, a checkpoint every 64 (the last 3 kept)."""
    cwd = tmp_path_factory.mktemp("tiny")
    run_dir = cwd / "runs" / "tiny"
    args = [*TINY, "total_timesteps=300", "eval_every=128", "checkpoint_every=64", f"run_dir={run_dir}"]
    check_ok(run_train(args, cwd))
    return run_dir


def test_default_config_composes(tmp_path: Path) -> None:
    result = run_train(["--cfg", "job"], tmp_path, timeout=60)
    check_ok(result)
    out = result.stdout
    expected_lines = ("id: mmrl/Recommend-v0", "name: ppo", "fusion: film", "threads: 1", "resume: null", "n_steps: 16",
                      "total_timesteps: 150000", "eval_every: 25000", "device_resident: false",  # the schema's defaults
                      "n_envs: 128", "image_encoder: patch")  # and Recommend's tuned PPO (configs/tuned/ppo/recommend.yaml)
    for expected in expected_lines:
        assert expected in out, f"{expected!r} not in the composed config:\n{out}"
    assert not (tmp_path / "runs").exists(), "--cfg job must not start a run"


def test_tiny_run_writes_every_artefact(tiny_run: Path) -> None:
    for name in ("config.yaml", "progress.csv", "evaluations.csv", "best_model.zip", "final_model.zip", "summary.json"):
        assert (tiny_run / name).is_file(), f"{name} missing from {sorted(p.name for p in tiny_run.iterdir())}"
    assert any(p.name.startswith("events.out.tfevents") for p in (tiny_run / "tb").iterdir()), "no TensorBoard events"
    checkpoints = list_checkpoints(tiny_run / CHECKPOINT_DIR)
    assert [c.steps for c in checkpoints] == [192, 256, 320], "checkpoints every 64 steps, the last 3 kept"
    assert all(c.state.is_file() for c in checkpoints)
    assert not [p for p in (tiny_run / CHECKPOINT_DIR).iterdir() if ".tmp" in p.name], "temporary files left behind"

    summary = summary_of(tiny_run)
    assert summary["total_timesteps"] == 320  # 300 rounded up to whole rollouts of 64
    assert summary["resumed_from"] is None
    for key in ("wall_time_s", "fps", "final_return", "best_return", "random_return", "oracle_return", "share_of_gap"):
        assert isinstance(summary[key], float), key
    assert summary["best_return"] >= summary["final_return"]
    assert summary["reference"] == "oracle" and summary["planner_return"] is None  # a contextual bandit: no planner
    share = (summary["final_return"] - summary["random_return"]) / (summary["oracle_return"] - summary["random_return"])
    assert summary["share_of_gap"] == pytest.approx(share)
    low, high = summary["final_ci95"]
    assert low <= summary["final_return"] <= high
    assert summary["better_than_random"] == (low > summary["random_ci95"][1])

    log = (tiny_run / "train.log").read_text()
    assert "step 320 | eval " in log and "entropy" in log, "train.log holds the progress lines"
    assert "mmrl.train: " in log and "final " in log and "random " in log, "... and the summary"
    assert "[bold" not in log and "\x1b[" not in log, "as plain text"
    assert "320 (total_timesteps=300, rounded up to whole rollouts)" in log
    config = (tiny_run / "config.yaml").read_text()
    assert f"run_dir: {tiny_run}" in config and "${" not in config, "the saved config is resolved"
    lines = (tiny_run / "progress.csv").read_text().splitlines()
    assert "time/total_timesteps" in lines[0] and len(lines) >= 5
    assert len((tiny_run / "evaluations.csv").read_text().splitlines()) == 1 + 3  # at 128, 256 and the end

    venv = mmrl.make_vec("mmrl/Recommend-v0", num_envs=2, seed=0, **env_options("recommend"))
    model = builders.load_algorithm("ppo", tiny_run / "final_model.zip", env=None, device="cpu")
    actions, _ = model.predict(venv.reset(), deterministic=True)
    assert actions.shape == (2,)


def test_tensorboard_gets_task_metrics_replays_and_hparams(tiny_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tiny_run / "tb"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in ("eval/mean_return", "eval/share_of_gap", "eval/task/click_through_rate", "eval/task/regret_per_step"):
        assert tag in scalars, f"{tag} not in {scalars}"
    assert [e.step for e in events.Scalars("eval/task/click_through_rate")] == [128, 256, 320], "one per evaluation"
    strips = events.Images("eval/replay")
    assert [s.step for s in strips] == [128, 256, 320] and strips[0].height > strips[0].width > 100
    summary = summary_of(tiny_run)
    share = events.Scalars("eval/share_of_gap")[-1].value
    assert share == pytest.approx(summary["share_of_gap"], abs=1e-5)
    from tensorboard.backend.event_processing import event_file_loader

    plugins = {
        value.tag
        for path in (tiny_run / "tb").iterdir()
        for event in event_file_loader.EventFileLoader(str(path)).Load()
        for value in event.summary.value
        if value.metadata.plugin_data.plugin_name == "hparams"
    }
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= plugins, plugins


def test_unknown_choice_fails_with_valid_choices(tmp_path: Path) -> None:
    result = run_train(["env=nope"], tmp_path, timeout=60)
    assert result.returncode != 0
    assert "Could not find 'env/nope'" in result.stderr and "recommend" in result.stderr, result.stderr
    result = run_train(["extractor=nope"], tmp_path, timeout=60)
    assert result.returncode != 0
    for choice in ("concat", "cross_attention", "film", "gated"):
        assert choice in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # every one fails before Hydra makes a folder: one line, exit code 2, valid choices and a did-you-mean
        ("total_timestep=1000", "unknown key 'total_timestep' (did you mean 'total_timesteps'?); valid keys: env, algo"),
        ("bogus=1", "unknown key 'bogus'; valid keys: env, algo, extractor, seed"),
        ("+bogus=1", "unknown key 'bogus'; valid keys: env, algo, extractor, seed"),
        ("extractor.fusoin=film", "unknown key 'extractor.fusoin' (did you mean 'fusion'?); valid keys of extractor:"),
        ("+extractor.fusoin=film", "unknown key 'extractor.fusoin' (did you mean 'fusion'?)"),
        ("extractor.fusion=flim", "extractor.fusion=flim: not one of concat, cross_attention, film, gated (did you mean 'film'?)"),
        ("extractor.text_encoder=gur", "not one of bag, gru, transformer, pretrained (did you mean 'gru'?)"),
        ("env=navgate", "Could not find 'env/navgate' (did you mean 'navigate'?); options of env: diagnose, diagnose_full, navigate,"),
        ("experiment=navigat", "Could not find 'experiment/navigat' (did you mean 'navigate'?)"),
        ("n_envs=many", "Value 'many' of type 'str' could not be converted to Integer"),
        ("n_envs=0", "must be positive"),
        ("algo.hyperparams.n_stepz=8", "does not take the hyper-parameters ['n_stepz']; valid choices: ['batch_size',"),
        ("+algo.hyperparams.n_stepz=8", "(did you mean 'n_steps'?)"),
        ("algo=a2c", "'a2c' has no device-resident variant; it exists for ['dqn', 'ppo']"),
        ("device=gpu", "device must be 'auto', 'cpu' or 'cuda'; got 'gpu'"),
        ("seed=-1", "seed must be an integer in [0, 2**32); got -1"),
        ("seed=4294967296", "seed must be an integer in [0, 2**32); got 4294967296"),
        ("algo.hyperparams.learning_rate=-1", "PPO hyper-parameter learning_rate=-1: must be > 0"),
        ("algo.hyperparams.gamma=1.5", "PPO hyper-parameter gamma=1.5: must be in [0, 1]"),
        ("algo=dqn", "DQN hyper-parameter buffer_size=-1: must be >= 1"),
        # env options are checked by the env itself, on one instance built before anything else
        ("env.options.image_size=9999", "image_size must be in [16, 512]; got 9999"),
        ("env.options.slate_sze=5", "has no option 'slate_sze'; valid options: ['betrayal',"),
        ("+env.options.slate_sze=5", "; did you mean 'slate_size'?"),
        ("--multirun seed=0,1 extractor.fusion=film,flim", "extractor.fusion=flim: not one of"),  # every swept value
    ],
)
def test_bad_key_or_value_fails_fast(tmp_path: Path, override: str, message: str) -> None:
    extra = {"algo=a2c": ["algo.device_resident=true"], "algo=dqn": ["algo.hyperparams.buffer_size=-1"]}.get(override, [])
    result = run_train([*override.split(), *extra, f"run_dir={tmp_path / 'run'}"], tmp_path, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, f"one line, no traceback:\n{result.stderr}"
    assert result.stderr.startswith("mmrl.train: bad config: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a failed start leaves no folder behind (run, runs/, multirun/)"


def test_help_lists_groups_options_keys_and_examples(tmp_path: Path) -> None:
    """--help is mmrl's own page (no internal schema group); sweeps go under runs/."""
    result = run_train(["--help"], tmp_path, timeout=60)
    check_ok(result)
    page = result.stdout
    for group in ("env=", "algo=", "extractor=", "experiment="):
        assert f"\n  {group}" in page, page
    for text in ("[recommend]", "navigate_full", "[ppo]", "recurrent_ppo", "[film]", "cross_attention", "recommend_long",
                 "total_timesteps=150000", "Env steps (summed over instances) at which the run ends", "seed=0",
                 "env.options.<option>", "algo.hyperparams.<name>", "Examples:", "python -m mmrl.train env=navigate",
                 "Tuned settings", "algo=ppo            diagnose, navigate, recommend, recommend_long, recommend_revenue, tutor"):  # fmt: skip
        assert text in page, f"{text!r} not in --help:\n{page}"
    assert "schema" not in page.replace("configs/schema.py", ""), page
    hydra = run_train(["--cfg", "hydra"], tmp_path, timeout=60)
    check_ok(hydra)
    assert "dir: runs/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}" in hydra.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_sweep_lands_under_runs_named_by_what_it_sweeps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without run_dir=, each job of a sweep is a run folder of runs/multirun/<date>/<time>/, named by its number and
    the values it sweeps (the shared overrides are in its config.yaml), holding Hydra's log with the run's lines;
    mmrl.compare's tables land beside the runs."""
    from mmrl.compare import main as compare_main

    check_ok(run_train(["--multirun", "seed=0,1", *TINY, "total_timesteps=64", "eval_every=0", "checkpoint_every=0"], tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"], "nothing outside runs/"
    (sweep,) = (tmp_path / "runs" / "multirun").glob("*/*")
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0-seed=0", "1-seed=1"]
    for job in ("0-seed=0", "1-seed=1"):
        assert summary_of(sweep / job)["run_dir"] == str(sweep / job)
        assert "step 64 | eval" in (sweep / job / "train.log").read_text()
    assert compare_main([str(sweep)]) == 0
    assert "| film |" in (sweep / "modality.md").read_text() and (sweep / "modality.json").is_file()
    capsys.readouterr()


def test_progress_labels_are_honest() -> None:
    """The bar ends at the step the run really ends at (whole rollouts); the entropy shown is the policy's entropy
    (SB3 logs the entropy loss, its negative)."""
    from types import SimpleNamespace

    from mmrl.train import OneLineOutput, end_step

    ppo = SimpleNamespace(n_steps=64, n_envs=32)
    assert end_step(ppo, 150_000) == 151_552 and end_step(ppo, 2048) == 2048  # type: ignore[arg-type]
    lines: list[str] = []
    OneLineOutput(lines.append).write({"time/total_timesteps": 64, "train/entropy_loss": -1.38}, {})
    assert lines == ["step 64 | entropy 1.38"]


def test_overlong_run_dir_fails_with_a_hint(tmp_path: Path) -> None:
    """A run_dir folder name over the file system's limit (a multirun named by a dozen overrides) fails before
    training, naming the limit and the remedy, instead of an OSError from deep inside."""
    result = run_train([f"run_dir={tmp_path / ('x' * 300)}"], tmp_path, timeout=60)
    assert result.returncode != 0
    assert "is 300 bytes; file systems take at most 255" in result.stderr and "experiment=" in result.stderr, result.stderr


def test_env_alone_brings_its_tuned_settings_and_yields_to_later_overrides(tmp_path: Path) -> None:
    """env=navigate brings Navigate's extractor (concat), its tuned PPO settings, CNN widths and budget
    (configs/tuned/ppo/navigate.yaml); keys given on the command line still win."""
    import yaml

    run_dir = tmp_path / "exp"
    check_ok(run_train(["env=navigate", *TINY, "total_timesteps=64", "eval_every=0", f"run_dir={run_dir}"], tmp_path))
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["env"]["name"] == "navigate" and config["extractor"]["image_channels"] == [16, 32]
    assert config["extractor"]["fusion"] == "concat"
    assert config["algo"]["hyperparams"]["learning_rate"] == 0.0005 and config["algo"]["hyperparams"]["gamma"] == 0.95
    assert config["algo"]["hyperparams"]["n_epochs"] == 1 and config["total_timesteps"] == 64  # from the command line
    assert summary_of(run_dir)["env"] == "mmrl/Navigate-v0" and summary_of(run_dir)["tuned"] is True
    assert "no settings tuned" not in (run_dir / "train.log").read_text()


def test_each_env_brings_its_own_settings() -> None:
    """RL Zoo's per-env hyper-parameters, as Hydra configs: env=X alone composes what experiment=X composes (the
    budget of Recommend's claim apart), the algorithm's generic settings are not Recommend's bandit horizon, and
    group choices and keys on the command line win over what the env brings."""
    from mmrl.train import compose_config, tuned_settings

    for name in ("navigate", "diagnose", "recommend_long", "tutor"):
        by_env, by_experiment = compose_config([f"env={name}", "seed=1"]), compose_config([f"experiment={name}", "seed=1"])
        assert dataclasses.replace(by_env, run_dir="") == dataclasses.replace(by_experiment, run_dir=""), name
        assert "ppo" in tuned_settings(name), name
    assert tuned_settings("tutor") == ["ppo"] and tuned_settings("navigate_full") == []
    assert compose_config([]).algo.hyperparams["gamma"] == 0.5 and compose_config(["experiment=recommend"]).total_timesteps == 240_000
    assert compose_config(["env=diagnose"]).algo.hyperparams["gamma"] == 0.9
    assert tuned_settings("recommend") == ["dqn", "ppo"] and compose_config(["algo=dqn"]).algo.hyperparams["gamma"] == 0.5
    assert compose_config(["algo=dqn", "env=diagnose"]).algo.hyperparams["buffer_size"] == 5000
    assert compose_config(["algo=dqn", "env=navigate"]).extractor.image_channels == [16, 32]
    assert compose_config(["algo=dqn", "env=tutor"]).algo.hyperparams["gamma"] == 0.95  # untuned: DQN's generic horizon
    assert compose_config(["env=recommend_full"]).algo.hyperparams["gamma"] == 0.95  # untuned: PPO's generic horizon
    assert compose_config(["env=diagnose"]).env.options["patients"] == 1 and compose_config(["env=diagnose_full"]).env.options["patients"] == 3
    tutor = compose_config(["env=tutor", "extractor=film", "algo.hyperparams.gamma=0.3", "total_timesteps=5000"])
    assert (tutor.extractor.fusion, tutor.extractor.text_encoder) == ("film", "gru")
    assert (tutor.algo.hyperparams["gamma"], tutor.algo.hyperparams["ent_coef"], tutor.total_timesteps) == (0.3, 0.01, 5000)


def test_every_tuned_file_names_an_algorithm_and_an_env() -> None:
    """configs/tuned/<algo>/<env>.yaml is optional in the defaults list, so a misnamed file would be silently unused."""
    from importlib.resources import files

    from mmrl.train import group_options

    folder = files("mmrl.configs").joinpath("tuned")
    pairs = [(a.name, f.name) for a in folder.iterdir() if a.is_dir() for f in a.iterdir() if f.name.endswith(".yaml")]
    assert len(pairs) >= 5
    for algo, name in pairs:
        assert algo in group_options("algo") and name[: -len(".yaml")] in group_options("env"), (algo, name)


def test_an_untuned_run_says_so(tmp_path: Path) -> None:
    """An algorithm without settings for the env runs with its generic ones, and says so at the start, in train.log
    and in the summary, naming what is tuned for the env."""
    from mmrl.train import compose_config, untuned_note

    note = untuned_note(compose_config(["env=tutor", "algo=a2c"]))
    assert note is not None and "algo=a2c has no settings tuned for env=tutor" in note and "algo=ppo" in note, note
    assert untuned_note(compose_config(["env=tutor"])) is None
    run_dir = tmp_path / "generic"
    result = run_train(["env=navigate_full", *TINY, "total_timesteps=64", "eval_every=0", f"run_dir={run_dir}"], tmp_path)
    check_ok(result)
    assert "no algorithm is tuned for env=navigate_full yet" in result.stdout + result.stderr
    assert "algo=ppo has no settings tuned for env=navigate_full" in (run_dir / "train.log").read_text()
    assert summary_of(run_dir)["tuned"] is False


def test_killed_run_resumes_to_the_same_step_count(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "killed"
    args = [*TINY, "total_timesteps=640", "eval_every=0", "checkpoint_every=128", f"run_dir={run_dir}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "mmrl.train", *args], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not list_checkpoints(run_dir / CHECKPOINT_DIR):
            assert process.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 90 s"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert not (run_dir / "summary.json").exists(), "killed after it finished; make the run longer"
    killed_at = list_checkpoints(run_dir / CHECKPOINT_DIR)[-1].steps

    result = run_train([f"resume={run_dir}"], tmp_path)
    check_ok(result)
    summary = summary_of(run_dir)
    assert summary["total_timesteps"] == 640, "a resumed run ends where an uninterrupted one does"
    assert summary["resumed_from"] == killed_at
    with open(run_dir / "progress.csv", newline="") as file:
        steps = [int(float(row["time/total_timesteps"])) for row in csv.DictReader(file) if row["time/total_timesteps"]]
    assert steps == sorted(steps) and steps[-1] == 640, "progress.csv continues from the checkpoint"
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["checkpoints", "tb"], "no stray folders"


def test_truncated_checkpoint_falls_back_to_the_previous_one(tiny_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run, run_dir)
    for name in ("summary.json", "final_model.zip"):
        (run_dir / name).unlink()
    latest = list_checkpoints(run_dir / CHECKPOINT_DIR)[-1]
    data = latest.model.read_bytes()
    latest.model.write_bytes(data[: len(data) // 2])

    result = run_train([f"resume={run_dir}"], tmp_path)
    check_ok(result)
    output = result.stdout + result.stderr
    assert f"checkpoint {latest.model} is unreadable" in output, output
    summary = summary_of(run_dir)
    assert summary["resumed_from"] == 256 and summary["total_timesteps"] == 320


def test_resume_warns_about_ignored_overrides(tiny_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "done"
    shutil.copytree(tiny_run, run_dir)
    result = run_train([f"resume={run_dir}", "seed=5"], tmp_path)
    check_ok(result)
    assert "ignoring ['seed=5']" in result.stdout + result.stderr
    assert summary_of(run_dir)["total_timesteps"] == 320  # already finished: nothing more to do


def test_dqn_resume_restores_the_replay_buffer(tmp_path: Path) -> None:
    run_dir = tmp_path / "dqn"
    args = [
        "algo=dqn", "n_envs=4", "total_timesteps=256", "checkpoint_every=64", "keep_checkpoints=5", "eval_every=0",
        "eval_episodes=8", "progress=false", "extractor.features_dim=32", "extractor.text_dim=16",
        "algo.hyperparams.buffer_size=1000", "algo.hyperparams.learning_starts=32", "algo.hyperparams.batch_size=16",
        "algo.hyperparams.target_update_interval=16", f"run_dir={run_dir}",
    ]  # fmt: skip
    check_ok(run_train(args, tmp_path))
    checkpoints = list_checkpoints(run_dir / CHECKPOINT_DIR)
    assert [c.steps for c in checkpoints] == [64, 128, 192, 256]
    assert all(c.replay_buffer.is_file() for c in checkpoints)

    # As if killed just after the checkpoint at 128 steps.
    for checkpoint in checkpoints[2:]:
        for path in checkpoint.files():
            path.unlink(missing_ok=True)
    (run_dir / "summary.json").unlink()
    config = saved_train_config(run_dir)
    env = make_train_env(config, "cpu")
    restored = load_latest_checkpoint(run_dir / CHECKPOINT_DIR, lambda: build_model(config, env, "cpu"))
    assert restored is not None and restored.checkpoint.steps == 128
    assert restored.model.replay_buffer.size() * 4 == 128, "the replay buffer holds every transition so far"

    result = run_train([f"resume={run_dir}"], tmp_path)
    check_ok(result)
    assert "replay buffer: 128 transitions" in result.stdout + result.stderr
    summary = summary_of(run_dir)
    assert summary["resumed_from"] == 128 and summary["total_timesteps"] == 256


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    atomic_write(path, lambda f: pickle.dump("old", f))

    def fail(file) -> None:
        file.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert pickle.loads(path.read_bytes()) == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pkl"]
    assert Checkpoint.at(tmp_path, 5).model.name == "step_0000000005.zip"


def test_builders_check_names_and_hyperparameters(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="valid choices: \\['a2c', 'dqn', 'ppo', 'recurrent_ppo'\\]"):
        builders.algorithm_class("sac")
    with pytest.raises(ValueError, match="n_step"):
        builders.check_algo_kwargs("ppo", {"n_step": 8})
    with pytest.raises(ValueError, match="set by mmrl"):
        builders.check_algo_kwargs("ppo", {"seed": 1})
    monkeypatch.setitem(sys.modules, "sb3_contrib", None)  # as if sb3-contrib were not installed
    with pytest.raises(ImportError, match="pip install sb3-contrib"):
        builders.algorithm_class("recurrent_ppo")



def test_linear_schedules_as_rl_zoo_writes_them(tmp_path: Path) -> None:
    """``learning_rate: lin_2e-3`` (RL Zoo's notation) decays linearly to 0 over the run; a malformed one is refused."""
    kwargs = builders.with_schedules({"learning_rate": "lin_2e-3", "clip_range": 0.2, "gamma": 0.9})
    schedule = kwargs["learning_rate"]
    assert (schedule(1.0), schedule(0.5), schedule(0.0)) == pytest.approx((2e-3, 1e-3, 0.0))
    assert kwargs["clip_range"] == 0.2 and kwargs["gamma"] == 0.9
    for bad in ("lin_x", "lin_-1", "2e-3", "cos_1e-3"):
        with pytest.raises(ValueError, match=rf"learning_rate='{bad}': expected a positive number or a linear schedule"):
            builders.check_algo_kwargs("ppo", {"learning_rate": bad})
    run_dir = tmp_path / "lin"
    check_ok(run_train([*TINY, "algo.hyperparams.learning_rate=lin_1e-3", "total_timesteps=128", "eval_every=0", f"run_dir={run_dir}"], tmp_path))
    assert summary_of(run_dir)["total_timesteps"] == 128

@pytest.mark.slow
def test_multirun_sweeps_seeds_and_extractors(tmp_path: Path) -> None:
    args = ["--multirun", "seed=0,1", "extractor=concat,film", *TINY, "total_timesteps=128", "eval_every=0",
            "checkpoint_every=0", "run_dir=runs/${extractor.fusion}-${seed}"]  # fmt: skip
    check_ok(run_train(args, tmp_path, timeout=300))
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert names == ["concat-0", "concat-1", "film-0", "film-1"]
    assert all((tmp_path / "runs" / n / "summary.json").is_file() for n in names)


@pytest.mark.slow
def test_default_run_beats_random(tmp_path: Path) -> None:
    """The whole default run (a few minutes on 2 cores): the final policy is clearly better than random."""
    run_dir = tmp_path / "default"
    check_ok(run_train(["progress=false", f"run_dir={run_dir}"], tmp_path, timeout=1800))
    summary = summary_of(run_dir)
    assert summary["final_return"] > summary["random_return"] + 2.0, summary


def test_device_resident_ppo_from_the_cli(tmp_path: Path) -> None:
    """algo.device_resident=true trains FastPPO on the env's tensors (mmrl.make_vec(as_tensors=True)); its zip
    loads with the same flag, and the evaluation CLI evaluates the run."""
    from mmrl.evaluate import main as evaluate_main

    run_dir = tmp_path / "fast"
    args = [*TINY, "algo.device_resident=true", "total_timesteps=128", "eval_every=0", f"run_dir={run_dir}"]
    check_ok(run_train(args, tmp_path))
    summary = summary_of(run_dir)
    assert summary["total_timesteps"] == 128
    assert summary["algo"] == "ppo" and summary["device_resident"] is True
    model = builders.load_algorithm("ppo", run_dir / "final_model.zip", env=None, device="cpu", device_resident=True)
    assert type(model).__name__ == "FastPPO" and model.num_timesteps == 128
    assert evaluate_main([f"run={run_dir}", "episodes=4", "video.episodes=0", "baselines=[]"]) == 0


def test_builders_pick_the_device_resident_variant_by_flag() -> None:
    from mmrl.agents.fast import FastDQN, FastPPO

    assert builders.algorithm_class("ppo", device_resident=True) is FastPPO
    assert builders.algorithm_class("dqn", device_resident=True) is FastDQN
    assert builders.algorithm_class("ppo").__name__ == "PPO"
    with pytest.raises(ValueError, match="'recurrent_ppo' has no device-resident variant"):
        builders.algorithm_class("recurrent_ppo", device_resident=True)


def test_resume_of_a_folder_that_is_not_a_run_names_it_and_creates_nothing(tmp_path: Path) -> None:
    result = run_train([f"resume={tmp_path / 'nope'}"], tmp_path, timeout=60)
    assert result.returncode == 2
    assert f"resume='{tmp_path / 'nope'}'" in result.stderr and "config.yaml" in result.stderr, result.stderr
    assert not (tmp_path / "nope").exists(), "a typo in resume= leaves no folder behind"
    result = run_train(["run_dir="], tmp_path, timeout=60)
    assert result.returncode == 2 and "run_dir is empty" in result.stderr, result.stderr


def test_resume_never_silently_restarts(tiny_run: Path, tmp_path: Path) -> None:
    """When no checkpoint loads, resuming fails naming each file and why, and changes nothing; restart=true starts
    the run over from step 0 in the same folder."""
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run, run_dir)
    for checkpoint in list_checkpoints(run_dir / CHECKPOINT_DIR):
        checkpoint.model.write_bytes(b"damaged")
    def files() -> dict[str, bytes]:  # train.log gets the attempt's warnings, the rest must stay as it was
        return {str(p): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "train.log"}

    before = files()
    result = run_train([f"resume={run_dir}"], tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no checkpoint loads (step_0000000320.zip: " in result.stderr and "restart=true" in result.stderr, result.stderr
    assert files() == before, "nothing was changed"
    check_ok(run_train([f"resume={run_dir}", "restart=true"], tmp_path))
    summary = summary_of(run_dir)
    assert summary["resumed_from"] is None and summary["total_timesteps"] == 320


@pytest.mark.parametrize(
    ("env_name", "options"), [("navigate", []), ("navigate_full", ["env.options.image_size=32"]), ("diagnose_full", ["env.options.image_size=32"])]
)
def test_other_envs_train_from_the_cli(env_name: str, options: list[str], tmp_path: Path) -> None:
    run_dir = tmp_path / env_name
    args = [*TINY, f"env={env_name}", *options, "total_timesteps=128", "eval_every=0", f"run_dir={run_dir}"]
    check_ok(run_train(args, tmp_path))
    summary = summary_of(run_dir)
    assert summary["env"] == f"mmrl/{env_name.split('_')[0].capitalize()}-v0" and summary["total_timesteps"] == 128


def test_env_compile_reaches_the_training_env() -> None:
    """``env.compile=true`` builds the training env with ``compile=True`` (compiling itself is tested in
    tests/test_compile.py); a non-bool value fails when the config is composed."""
    from mmrl.train import compose_config, make_train_env

    for flag in ("true", "false"):
        config = compose_config([f"env.compile={flag}", "n_envs=2"])
        assert make_train_env(config, "cpu").batched_env.compiled is (flag == "true")
    with pytest.raises(Exception, match="compile"):
        compose_config(["env.compile=maybe"])


def test_compiled_training_freezes_the_garbage_collector_after_the_first_rollout() -> None:
    """With a compiled env the run callback calls ``gc.freeze()`` once the first rollout has compiled the env, so
    full GC passes over the compiler's objects do not stall steps; without it the GC is left alone."""
    import gc

    from mmrl.train import RunCallback

    for compiled in (False, True):
        gc.unfreeze()
        callback = RunCallback(
            Path("."), eval_env=None, state={}, eval_every=0, checkpoint_every=0, keep_checkpoints=1, eval_seed=0,  # type: ignore[arg-type]
            compiled_env=compiled,
        )  # fmt: skip
        callback.on_rollout_end()
        callback.on_rollout_end()
        assert (gc.get_freeze_count() > 0) is compiled, compiled
    gc.unfreeze()


def test_composed_config_is_plain_values() -> None:
    """The entry point converts the config once: what the library gets is the TrainConfig dataclass, with plain
    dicts and lists (no OmegaConf nodes), the schema's defaults and the experiment's settings."""
    from mmrl.configs.schema import TrainConfig
    from mmrl.train import compose_config

    config = compose_config(["experiment=navigate", "seed=3"])
    assert isinstance(config, TrainConfig) and config.seed == 3 and config.total_timesteps == 250_000
    assert type(config.env.options) is dict and type(config.algo.hyperparams) is dict
    assert type(config.extractor.image_channels) is list and config.extractor.fusion == "concat"
    assert "${" not in config.run_dir and config.run_dir.startswith("runs/navigate-ppo-3-")
    assert compose_config([]).eval_every == 25_000


@pytest.mark.parametrize("stop_signal", ["SIGTERM", "SIGUSR1"])
def test_stop_signal_checkpoints_and_a_requeued_job_resumes(tmp_path: Path, stop_signal: str) -> None:
    """What a scheduler does: a stop signal mid-run, then the same command again (``resume=auto``). The run stops
    at its next step, checkpoints, exits with 128 + the signal's number, and the rerun ends where an uninterrupted
    run does."""
    signum = getattr(signal, stop_signal)
    run_dir = tmp_path / "runs" / "requeued"
    args = [*TINY, "total_timesteps=3200", "eval_every=0", "checkpoint_every=0", "resume=auto", f"run_dir={run_dir}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "mmrl.train", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    progress = run_dir / "progress.csv"
    try:
        deadline = time.monotonic() + 90
        while not (progress.is_file() and len(progress.read_text().splitlines()) >= 3):  # two rollouts logged
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no progress within 90 s"
            time.sleep(0.05)
        os.kill(process.pid, signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signum, stderr[-3000:]
    assert f"stopped by {stop_signal} at step" in stderr and f"resume={run_dir}" in stderr, stderr[-3000:]
    (checkpoint,) = list_checkpoints(run_dir / CHECKPOINT_DIR)
    assert 128 <= checkpoint.steps < 3200 and checkpoint.steps % ROLLOUT == 0, "at a rollout boundary"
    assert not (run_dir / "summary.json").exists()

    result = run_train(args, tmp_path)  # the same command again
    check_ok(result)
    summary = summary_of(run_dir)
    assert summary["resumed_from"] == checkpoint.steps and summary["total_timesteps"] == 3200


def test_stop_signals_hand_the_signal_on() -> None:
    from mmrl.stop_signals import StopSignals

    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.01)
            assert stop.received == signal.SIGUSR1 and seen == [], "recorded, not passed on yet"
        with pytest.raises(SystemExit) as exited:
            stop.hand_on()
        assert seen == [signal.SIGUSR1] and exited.value.code == 128 + signal.SIGUSR1
        assert signal.getsignal(signal.SIGUSR1) is not stop._record, "the old handler is back"
    finally:
        signal.signal(signal.SIGUSR1, previous)
    with StopSignals() as quiet:
        pass
    quiet.hand_on()  # no signal: nothing happens
