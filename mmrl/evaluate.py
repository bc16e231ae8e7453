"""``python -m mmrl.evaluate``: metrics, replay videos and an HTML report for a trained run or a reference policy.

Usage::

    python -m mmrl.evaluate run=runs/<dir> [episodes=100] [video.episodes=2] [seed=1000000] [out=<folder>]
    python -m mmrl.evaluate policy=oracle [env=recommend] [env.options.slate_size=6] ...
    python -m mmrl.evaluate --help | --cfg [overrides]

With ``run=``, the run's resolved ``config.yaml`` (written by ``python -m mmrl.train``) gives the env and the
algorithm, and ``best_model.zip`` (else ``final_model.zip``) the model, loaded with SB3's ``<Algo>.load``. All
``episodes`` run at once on one batched env (episode ``i`` is row ``i``, seeded ``seed + i``); the reference
policies (``baselines``) run on the same seeds. Each evaluation writes a new folder (never an existing one)::

    metrics.json        mean, std, 95% CI of return and length, the env's task metrics, for every policy
    videos/episode-0000.mp4 ...   H.264 replays of the first ``video.episodes`` episodes
    learning_curve.png  from the run's progress.csv / evaluations.npz (runs only)
    report.html         the curve, the metrics table and the videos, by relative paths (works offline)

Overrides are parsed with Hydra's compose API (the config is ``configs/evaluate.yaml`` with the typed schema
:class:`EvaluateConfig`); unlike ``@hydra.main`` this writes no ``outputs/`` folder and lets a bad key fail with
the list of valid keys. This module is the only one of the evaluation code that imports Hydra.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING, DictConfig, OmegaConf

from mmrl.configs.schema import EnvConfig

RUN_CONFIG = "config.yaml"
MODEL_FILES = ("best_model.zip", "final_model.zip")
REFERENCE_POLICIES = ("random", "greedy", "oracle")
METRICS_SCHEMA_VERSION = 1
#: replay videos enlarge the observation image to about this many pixels unless video.scale is set
VIDEO_IMAGE_SIZE = 256


@dataclass
class VideoConfig:
    """Replay videos."""

    episodes: int = 2
    """How many of the first episodes get a video (0: none)."""
    fps: float = 2.0
    """Frames per second (one frame per observation)."""
    scale: int | None = None
    """The observation image is enlarged this many times (``None``: to about 256 pixels)."""


@dataclass
class EvaluateConfig:
    """``python -m mmrl.evaluate``: evaluate a run's model or a reference policy."""

    env: EnvConfig = MISSING
    """The env for ``policy=`` evaluations (with ``run=``, the run's env; ``env.options.*`` overrides still apply)."""
    run: str | None = None
    """A run directory of ``python -m mmrl.train``."""
    policy: str | None = None
    """``random``, ``greedy`` or ``oracle``: evaluate this reference policy instead of a run."""
    episodes: int = 100
    """Episodes, all run at once (one per batch row)."""
    seed: int = 1_000_000
    """Episode ``i`` is seeded ``seed + i``."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``auto``: where the env and the model run."""
    deterministic: bool = True
    """The agent takes its most likely action (``false``: sampled, with torch seeded from ``seed``)."""
    baselines: list[str] = field(default_factory=lambda: list(REFERENCE_POLICIES))
    """Reference policies evaluated on the same episodes."""
    threads: int = 1
    """``torch.set_num_threads``."""
    video: VideoConfig = field(default_factory=VideoConfig)
    out: str | None = None
    """Output folder; default ``<run>/eval-<time>`` (or ``runs/eval-<env>-<policy>-<time>``). Never overwritten:
    an existing folder gets a ``-1``, ``-2`` ... sibling instead."""


class EvaluationError(Exception):
    """A problem with the request (bad run directory, bad value); the CLI prints it without a traceback."""


# ---------------------------------------------------------------------------------------------- config
def _register_schemas() -> None:
    from hydra.core.config_store import ConfigStore

    from mmrl.configs.schema import register_configs

    register_configs()
    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


def valid_keys() -> list[str]:
    """Every key ``python -m mmrl.evaluate`` accepts, dotted."""
    keys: list[str] = []
    for f in dataclasses.fields(EvaluateConfig):
        if f.name == "env":
            keys += ["env=<name>", "env.options.<option>"]
        elif f.name == "video":
            keys += [f"video.{g.name}" for g in dataclasses.fields(VideoConfig)]
        else:
            keys.append(f.name)
    return keys


def _env_choices() -> list[str]:
    from importlib.resources import files

    return sorted(p.name[:-5] for p in files("mmrl.configs").joinpath("env").iterdir() if p.name.endswith(".yaml"))


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The evaluation config from ``configs/evaluate.yaml`` and ``key=value`` overrides.

    :raises EvaluationError: for a bad key or value, naming the valid keys (or env choices)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _register_schemas()
    GlobalHydra.instance().clear()
    # env.options holds the env's keyword arguments, which the env itself checks (naming its valid ones):
    # let env.options.x=v set an option the env config does not list, without Hydra's "+" prefix.
    overrides = [f"++{o}" if o.startswith("env.options.") else o for o in overrides]
    try:
        with initialize_config_module(config_module="mmrl.configs", version_base=None):
            return compose(config_name="evaluate", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        message = str(error).split("\nConfig search path")[0].strip()
        if message.startswith("Could not override"):
            message = f"unknown key {message.split(chr(39))[1]!r}"
        elif error.__cause__ is not None:
            message += f": {str(error.__cause__).splitlines()[0]}"
        hint = f"valid keys: {', '.join(valid_keys())}; env choices: {', '.join(_env_choices())}"
        raise EvaluationError(f"{message}\n{hint}") from None


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def load_run_config(run_dir: str | os.PathLike[str]) -> DictConfig:
    """The resolved config saved in a run directory, checked for what evaluation needs.

    :raises EvaluationError: naming the path and what is missing or corrupt."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise EvaluationError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise EvaluationError(f"run={run_dir} is not a directory")
    path = run_dir / RUN_CONFIG
    if not path.is_file():
        raise EvaluationError(
            f"{run_dir} is not a run directory: {RUN_CONFIG} (the resolved config written by python -m mmrl.train) is missing"
        )
    try:
        config = OmegaConf.load(path)
    except Exception as error:  # yaml.YAMLError and friends: the file is not YAML
        raise EvaluationError(f"{path} is corrupt: not readable as YAML ({type(error).__name__}: {error})") from None
    if not isinstance(config, DictConfig):
        raise EvaluationError(f"{path} is corrupt: expected a mapping, got {type(config).__name__}")
    missing = [key for key in ("env.id", "algo.name") if OmegaConf.select(config, key, default=None) is None]
    if missing:
        raise EvaluationError(f"{path} is corrupt or not a training config: no {', '.join(missing)}")
    return config


def find_model(run_dir: str | os.PathLike[str]) -> Path:
    """``best_model.zip`` of the run, else ``final_model.zip``.

    :raises EvaluationError: when neither exists."""
    for name in MODEL_FILES:
        path = Path(run_dir) / name
        if path.is_file():
            return path
    raise EvaluationError(f"no model in run directory {run_dir}: expected {' or '.join(MODEL_FILES)}")


def load_model(algo_name: str, path: Path, device: str) -> Any:
    """The SB3 model saved at ``path`` (``<Algo>.load``).

    :raises EvaluationError: for an unknown algorithm or an unreadable file."""
    from mmrl.agents.builders import algorithm_class

    try:
        cls = algorithm_class(algo_name)
    except (ValueError, ImportError) as error:
        raise EvaluationError(f"cannot load {path}: {error}") from None
    try:
        return cls.load(path, device=device)
    except Exception as error:  # zipfile.BadZipFile, pickle errors, missing entries
        raise EvaluationError(f"{path} is corrupt: {cls.__name__}.load failed ({type(error).__name__}: {error})") from None


def resolve_device(device: str) -> str:
    """``auto`` to ``cuda`` when available, else ``cpu``; an unavailable ``cuda`` fails."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvaluationError(f"device={device} was asked for but CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise EvaluationError(f"device must be cpu, cuda or auto; got {device!r}")
    return device


def new_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path``, or ``path-1``, ``path-2`` ... if it exists: never an existing folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        candidate = path if n == 0 else path.with_name(f"{path.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise EvaluationError(f"could not create a new output folder next to {path}")


# ---------------------------------------------------------------------------------------------- policies
class ModelPolicy:
    """An SB3 model acting on a batched env: ``model.predict`` on the whole batch (numpy), recurrent state kept.

    :param model: a loaded SB3 / sb3-contrib algorithm.
    :param env: the batched env (its observation space must match the model's).
    :param deterministic: most likely actions instead of samples.
    """

    def __init__(self, model: Any, env: Any, deterministic: bool = True):
        self.model = model
        self.env = env
        self.deterministic = deterministic
        self.keys = list(model.observation_space.spaces)
        for key in self.keys:
            if key not in env.single_observation_space.spaces:
                raise EvaluationError(f"the model reads observation key {key!r}, which the env does not have")
            want, got = model.observation_space[key].shape, env.single_observation_space[key].shape
            if want != got:
                raise EvaluationError(
                    f"the model expects {key} of shape {want}, the env gives {got}: are env.options the run's?"
                )
        self.recurrent = "Lstm" in type(model.policy).__name__ or "Recurrent" in type(model.policy).__name__
        self.state: Any = None
        self.episode_start = np.ones(env.num_envs, dtype=bool)

    def act(self, obs: dict[str, torch.Tensor], info: dict[str, Any]) -> torch.Tensor:
        batch = {key: obs[key].cpu().numpy() for key in self.keys}
        if self.recurrent:
            actions, self.state = self.model.predict(
                batch, state=self.state, episode_start=self.episode_start, deterministic=self.deterministic
            )
        else:
            actions, _ = self.model.predict(batch, deterministic=self.deterministic)
        return torch.as_tensor(np.asarray(actions).reshape(-1), dtype=torch.int64, device=self.env.device)

    def update(self, info: dict[str, Any], done: torch.Tensor) -> None:
        self.episode_start = done.cpu().numpy().copy()


# ---------------------------------------------------------------------------------------------- evaluation
def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _run_policy(env: Any, act: Any, update: Any, seed: int, sum_keys: tuple[str, ...]) -> Any:
    from mmrl.episodes import run_episodes

    return run_episodes(env, act, seed=seed, update=update, sum_keys=sum_keys)


def _evaluate_into(
    out_dir: Path,
    cfg: DictConfig,
    env: Any,
    env_cfg: dict[str, Any],
    policy: ModelPolicy | None,
    evaluated: str,
    source: dict[str, Any],
    run_dir: Path | None,
    now: dt.datetime,
) -> None:
    """Run every policy on ``env`` and write metrics, videos and the report into ``out_dir``."""
    from mmrl.agents.reference import make_reference_policy
    from mmrl.metrics import CI_METHOD, episode_metrics, task_metrics_for
    from mmrl.report import write_report
    from mmrl.video import EpisodeRecorder, replay_frames, write_mp4

    task = task_metrics_for(env)
    sum_keys = task.sum_keys if task else ()
    names = [evaluated] + [b for b in cfg.baselines if b != evaluated]
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    skipped: dict[str, str] = {}
    recorder = EpisodeRecorder(env, int(cfg.video.episodes), int(cfg.seed))
    for name in names:
        start = time.perf_counter()
        if name == "agent":
            assert policy is not None
            if not cfg.deterministic:
                torch.manual_seed(int(cfg.seed))
            actor = policy
        else:
            try:
                actor = make_reference_policy(name, env, seed=int(cfg.seed))
            except (ValueError, KeyError, AttributeError) as error:
                if name == evaluated:
                    raise EvaluationError(str(error)) from None
                skipped[name] = str(error)
                continue
        act, update = actor.act, actor.update
        if name == evaluated:
            act, update = recorder.wrap_act(act), recorder.wrap_update(update)
        stats = _run_policy(env, act, update, int(cfg.seed), sum_keys)
        results[name] = episode_metrics(stats, task)
        timings[name] = round(time.perf_counter() - start, 3)

    videos_meta = []
    image_height = env.single_observation_space["image"].shape[1]
    scale = int(cfg.video.scale) if cfg.video.scale is not None else max(1, round(VIDEO_IMAGE_SIZE / image_height))
    if recorder.trajectories:
        (out_dir / "videos").mkdir()
    for i, trajectory in enumerate(recorder.trajectories):
        frames = replay_frames(env, trajectory, scale=scale)
        name = f"videos/episode-{i:04d}.mp4"
        write_mp4(out_dir / name, frames, fps=float(cfg.video.fps))
        height, width = frames[0].shape[:2]
        videos_meta.append({
            "file": name, "episode": i, "seed": trajectory.seed, "length": trajectory.length, "frames": len(frames),
            "return": trajectory.returns[-1] if trajectory.returns else 0.0, "fps": float(cfg.video.fps),
            "width": width + width % 2, "height": height + height % 2, "codec": "h264",
        })  # fmt: skip

    metrics = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "created": now.isoformat(timespec="seconds"),
        "evaluated": evaluated,
        "source": source,
        "env": {"name": env_cfg.get("name"), "id": env_cfg["id"], "options": env_cfg.get("options", {})},
        "episodes": int(cfg.episodes),
        "seed": int(cfg.seed),
        "seeds": [int(cfg.seed), int(cfg.seed) + int(cfg.episodes) - 1],
        "deterministic": bool(cfg.deterministic),
        "device": str(env.device),
        "ci_method": CI_METHOD,
        "policies": results,
        "skipped_baselines": skipped,
        "videos": videos_meta,
        "seconds": timings,
    }
    _atomic_json(out_dir / "metrics.json", metrics)
    title = f"Evaluation of {run_dir.name if run_dir else cfg.policy + ' policy'} on {env_cfg['id']}"
    write_report(out_dir, metrics, run_dir=run_dir, title=title)
    _atomic_json(out_dir / "evaluate_config.json", OmegaConf.to_container(cfg, resolve=True))


def evaluate(cfg: DictConfig, overrides: Sequence[str] = ()) -> Path:
    """Run one evaluation as ``cfg`` (an :class:`EvaluateConfig`) says; returns the new output folder.

    :param overrides: the command-line overrides, to tell which ``env.options`` to apply on top of a run's env.
    :raises EvaluationError: for a bad run directory or a bad value.
    """
    import mmrl

    if cfg.episodes < 1:
        raise EvaluationError(f"episodes must be >= 1; got {cfg.episodes}")
    if cfg.video.episodes < 0 or cfg.video.fps <= 0 or (cfg.video.scale is not None and cfg.video.scale < 1):
        raise EvaluationError(f"video.episodes must be >= 0, video.fps > 0, video.scale >= 1; got {OmegaConf.to_container(cfg.video)}")
    bad = [b for b in cfg.baselines if b not in REFERENCE_POLICIES]
    if bad:
        raise EvaluationError(f"baselines must be among {list(REFERENCE_POLICIES)}; got {bad}")
    if (cfg.run is None) == (cfg.policy is None):
        raise EvaluationError("give either run=<run directory> or policy=<random|greedy|oracle> (one of them)")
    if cfg.policy is not None and cfg.policy not in REFERENCE_POLICIES:
        raise EvaluationError(f"policy must be one of {list(REFERENCE_POLICIES)}; got {cfg.policy!r}")
    torch.set_num_threads(max(1, int(cfg.threads)))
    device = resolve_device(cfg.device)
    now = dt.datetime.now()
    stamp = now.strftime("%Y%m%d-%H%M%S")

    model = None
    run_dir: Path | None = None
    if cfg.run is not None:
        run_dir = Path(cfg.run)
        run_cfg = load_run_config(run_dir)
        if any(_override_key(o) == "env" for o in overrides):
            raise EvaluationError("with run=, the env is the run's own; drop env=<name> (env.options.* overrides apply)")
        env_cfg = OmegaConf.to_container(run_cfg.env, resolve=True)
        env_cfg.setdefault("options", {})
        for override in overrides:
            key = _override_key(override)
            if key.startswith("env.options."):
                env_cfg["options"][key[len("env.options."):]] = OmegaConf.select(cfg, key)
        model_path = find_model(run_dir)
        algo = str(run_cfg.algo.name)
        source = {"kind": "run", "run_dir": str(run_dir.resolve()), "model": model_path.name, "algo": algo,
                  "train_seed": OmegaConf.select(run_cfg, "seed", default=None)}  # fmt: skip
        model = load_model(algo, model_path, device)
        evaluated = "agent"
        default_out = run_dir / f"eval-{stamp}"
    else:
        env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
        source = {"kind": "policy", "policy": cfg.policy}
        evaluated = str(cfg.policy)
        default_out = Path("runs") / f"eval-{env_cfg.get('name', 'env')}-{cfg.policy}-{stamp}"

    try:
        env = mmrl.make_batched(env_cfg["id"], num_envs=int(cfg.episodes), device=device, **env_cfg.get("options", {}))
    except (TypeError, ValueError, KeyError) as error:
        raise EvaluationError(f"cannot build env {env_cfg['id']} with options {env_cfg.get('options')}: {error}") from None
    policy = ModelPolicy(model, env, bool(cfg.deterministic)) if model is not None else None

    out_dir = new_output_dir(cfg.out if cfg.out is not None else default_out)
    try:
        _evaluate_into(out_dir, cfg, env, env_cfg, policy, evaluated, source, run_dir, now)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)  # our own new folder: no half-written evaluation is left
        raise
    return out_dir


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """A short text table of the metrics for the terminal."""
    lines = [f"{'policy':<10} {'return (95% CI)':<28} {'length':>7}"]
    for name, values in metrics["policies"].items():
        ret, length = values["episode_return"], values["episode_length"]
        extra = "  ".join(
            f"{k}={v['mean']:.3f}" if isinstance(v, dict) else f"{k}={v:.3f}"
            for k, v in values["task"].items()
            if k in ("click_through_rate", "regret_vs_oracle")
        )
        ci = f"{ret['mean']:.3f} [{ret['ci95'][0]:.3f}, {ret['ci95'][1]:.3f}]"
        lines.append(f"{name:<10} {ci:<28} {length['mean']:>7.2f}  {extra}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``key=value`` overrides; ``--help``; ``--cfg`` prints the composed config."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        print("valid keys:", ", ".join(valid_keys()))
        return 0
    show = "--cfg" in args
    overrides = [a for a in args if a != "--cfg"]
    flags = [a for a in overrides if a.startswith("-")]
    try:
        if flags:
            raise EvaluationError(f"unknown option(s) {flags}; use key=value overrides (valid keys: {', '.join(valid_keys())})")
        cfg = compose_config(overrides)
        if show:
            print(OmegaConf.to_yaml(cfg))
            return 0
        out_dir = evaluate(cfg, overrides)
    except EvaluationError as error:
        print(f"mmrl.evaluate: error: {error}", file=sys.stderr)
        return 2
    metrics = json.loads((out_dir / "metrics.json").read_text())
    print("\n".join(summary_lines(metrics)))
    print(f"wrote {out_dir}/ (metrics.json, report.html, {len(metrics['videos'])} videos)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
