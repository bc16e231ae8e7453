"""mmrl where users already are (issue #15): the console scripts and Hydra's tab completion, the stock SB3 paths
that cannot work with image + text observations (each fails with a message naming the fix), and RL Baselines3 Zoo
with the hyperparameters shipped in ``mmrl.zoo``."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

import mmrl
from mmrl.extractors.multimodal import VECNORMALIZE_FIX

ENV_ID = "mmrl/Recommend-v0"
SCRIPTS = {"mmrl-train": "mmrl.train:main", "mmrl-evaluate": "mmrl.evaluate:main", "mmrl-compare": "mmrl.compare:main"}
EXTRACTOR = dict(features_extractor_class=mmrl.MultimodalExtractor,
                 features_extractor_kwargs=dict(features_dim=32, text_dim=16, image_channels=(8, 16, 16), film_blocks=1))  # fmt: skip


# ------------------------------------------------------------------ console scripts


def script(name: str) -> Path:
    """The installed console script ``name`` of this interpreter's environment."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: reinstall mmrl (pip install -e '.[dev]') so its console scripts are written")
    return path


def run(*command: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_console_scripts_are_declared_and_point_at_the_mains() -> None:
    declared = {ep.name: ep for ep in metadata.entry_points(group="console_scripts") if ep.name in SCRIPTS}
    assert {name: ep.value for name, ep in declared.items()} == SCRIPTS
    for ep in declared.values():
        assert callable(ep.load())


def test_console_scripts_run(tmp_path: Path) -> None:
    job = run(script("mmrl-train"), "--cfg", "job", "extractor=concat", cwd=tmp_path)
    assert job.returncode == 0, job.stderr
    assert "fusion: concat" in job.stdout and "id: mmrl/Recommend-v0" in job.stdout
    completion = run(script("mmrl-train"), "-sc", "install=bash", cwd=tmp_path)
    assert completion.returncode == 0, completion.stderr
    assert "complete -o nospace -o default -F hydra_bash_completion mmrl-train" in completion.stdout
    for name in ("mmrl-evaluate", "mmrl-compare"):
        result = run(script(name), "--help", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "usage" in result.stdout.lower() or "valid keys" in result.stdout


# ------------------------------------------------------------------ stock SB3 pitfalls


def test_combined_extractor_needs_36_px() -> None:
    venv = mmrl.make_vec(ENV_ID, num_envs=2, seed=0, image_size=32)
    # Stock SB3 fails in NatureCNN's constructor; mmrl cannot change that, but check_sb3_setup names the fix first.
    with pytest.raises(RuntimeError, match="Kernel size can't be greater than actual input size"):
        PPO("MultiInputPolicy", venv, n_steps=8, batch_size=8, device="cpu")
    with pytest.raises(ValueError, match=r"NatureCNN.*at least 36 px.*features_extractor_class=mmrl\.MultimodalExtractor"):
        mmrl.check_sb3_setup(venv)
    mmrl.check_sb3_setup(venv, EXTRACTOR)  # mmrl's extractor works at 32 px
    PPO("MultiInputPolicy", venv, n_steps=8, batch_size=8, device="cpu", policy_kwargs=EXTRACTOR)
    large = mmrl.make_vec(ENV_ID, num_envs=2, seed=0, image_size=36)
    mmrl.check_sb3_setup(large)
    PPO("MultiInputPolicy", large, n_steps=8, batch_size=8, device="cpu")
    space = gym.make(ENV_ID, image_size=32).observation_space
    with pytest.raises(ValueError, match=r"image_encoder='nature' cannot encode .*36 px or more.*image_encoder='cnn'"):
        mmrl.MultimodalExtractor(space, image_encoder="nature")


def test_vec_normalize_of_token_ids_fails_naming_the_fix() -> None:
    def venv() -> VecEnv:
        return mmrl.make_vec(ENV_ID, num_envs=2, seed=0, image_size=32)

    # Stock VecNormalize normalises the ids too; the extractor's first forward says so instead of an IndexError.
    model = PPO("MultiInputPolicy", VecNormalize(venv()), n_steps=8, batch_size=8, device="cpu", policy_kwargs=EXTRACTOR)
    with pytest.raises(ValueError, match=r"token ids that are not integers in \[0, 85\].*norm_obs_keys=\['image'\]"):
        model.learn(16)
    with pytest.raises(ValueError, match=r"normalises the token ids of \['text'\].*norm_obs=False"):
        mmrl.check_sb3_setup(VecNormalize(venv()), EXTRACTOR)
    for fixed in (VecNormalize(venv(), norm_obs_keys=["image"]), VecNormalize(venv(), norm_obs=False)):
        mmrl.check_sb3_setup(fixed, EXTRACTOR)
        PPO("MultiInputPolicy", fixed, n_steps=8, batch_size=8, device="cpu", policy_kwargs=EXTRACTOR).learn(16)


def test_extractor_rejects_ids_out_of_range() -> None:
    space = gym.make(ENV_ID, image_size=32).observation_space
    extractor = mmrl.MultimodalExtractor(space, text_encoder="bag", features_dim=16, image_channels=(8, 8, 8))
    images = torch.zeros(2, 3, 32, 32)
    ids = torch.zeros(2, 24)
    extractor({"image": images, "text": ids})
    for bad in (torch.full((2, 24), 86.0), torch.full((2, 24), -1.0), torch.full((2, 24), 0.5)):
        with pytest.raises(ValueError, match="not integers in \\[0, 85\\]") as error:
            extractor({"image": images, "text": bad})
        assert VECNORMALIZE_FIX in str(error.value)


# ------------------------------------------------------------------ RL Baselines3 Zoo


def test_zoo_hyperparameters_resolve_without_mmrl_in_the_namespace() -> None:
    from mmrl.zoo import conf_path, load_hyperparams

    hyperparams = load_hyperparams("ppo")
    assert set(hyperparams) == {"mmrl/Recommend-v0", "mmrl/Navigate-v0", "mmrl/Diagnose-v0"}
    for env_id, params in hyperparams.items():
        assert "normalize" not in params  # VecNormalize would normalise the token ids
        # The Zoo evaluates the string in its own module, where mmrl is not imported.
        policy_kwargs = eval(params["policy_kwargs"], {"__builtins__": __builtins__})  # noqa: S307
        assert policy_kwargs["features_extractor_class"] is mmrl.MultimodalExtractor
        env = gym.make(env_id, **params["env_kwargs"])
        mmrl.check_sb3_setup(env, policy_kwargs)
        mmrl.MultimodalExtractor(env.observation_space, **policy_kwargs["features_extractor_kwargs"])
    with pytest.raises(ValueError, match=r"no RL Zoo hyperparameters for algo 'sac'; valid choices: \['ppo'\]"):
        conf_path("sac")


def test_zoo_train_enjoy_and_record_video(tmp_path: Path) -> None:
    pytest.importorskip("rl_zoo3", reason="RL Baselines3 Zoo is not installed (pip install -e '.[zoo]')")
    common = ["--algo", "ppo", "--env", ENV_ID, "-f", str(tmp_path / "logs")]
    train = run(
        sys.executable, "-m", "rl_zoo3.train", *common, "--gym-packages", "mmrl", "--conf-file", "mmrl.zoo.ppo",
        "-n", "64", "--eval-freq", "-1", "--seed", "0", "--num-threads", "1",
        "-params", "n_envs:2", "n_steps:16", "batch_size:32", "n_epochs:1", cwd=tmp_path,
    )  # fmt: skip
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-3000:]
    run_folder = tmp_path / "logs" / "ppo" / "mmrl-Recommend-v0_1"
    assert (run_folder / "mmrl-Recommend-v0.zip").is_file()
    assert "MultimodalExtractor" in (run_folder / "mmrl-Recommend-v0" / "config.yml").read_text()
    enjoy = run(
        sys.executable, "-m", "rl_zoo3.enjoy", *common, "--gym-packages", "mmrl", "-n", "40", "--no-render",
        "--deterministic", cwd=tmp_path,
    )  # fmt: skip
    assert enjoy.returncode == 0, enjoy.stderr[-3000:]
    assert "Episode Reward" in enjoy.stdout
    # rl_zoo3.record_video has no --gym-packages: mmrl.zoo.record_video registers the envs and runs it; the env
    # options come with --env-kwargs (the script reads them from the command line, not from the run's config).
    record = run(
        sys.executable, "-m", "mmrl.zoo.record_video", *common, "-n", "20", "-o", tmp_path / "videos",
        "--env-kwargs", "image_size:32", "num_categories:4", "num_colours:4", cwd=tmp_path,
    )  # fmt: skip
    assert record.returncode == 0, record.stderr[-3000:]
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000
