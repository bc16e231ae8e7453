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
    videos/episode-0000.mp4 ...   H.264 replays of the first ``video.episodes`` episodes and of the best, median
                        and worst ones (with a poster frame each, episode-0000-poster.png); each frame's panel
                        also shows the hidden ground truth and, on the last frame, why the episode ended
    episode_returns.csv every policy's return in each episode
    learning_curve.png  from the run's progress.csv / evaluations.npz (runs only)
    report.html         the curve, the metrics table and the videos, by relative paths (works offline)

Overrides are parsed with Hydra's compose API (the config is ``configs/evaluate.yaml`` with the typed schema
:class:`EvaluateConfig`); unlike ``@hydra.main`` this writes no ``outputs/`` folder and lets a bad key fail with
the list of valid keys. Hydra and OmegaConf are used by the command line only (:func:`main`,
:func:`compose_config`), which turns the overrides into an :class:`EvaluateConfig` once; :func:`write_evaluation`
and what it calls take plain values. Run folders, atomic writes, the saved config and the device come from
:mod:`mmrl.runs`; the model acts through :class:`mmrl.agents.model_policy.ModelPolicy`, on the env's device.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

import mmrl
from mmrl.agents.model_policy import ModelPolicy
from mmrl.configs.schema import MISSING, EnvConfig, ExtractorConfig
from mmrl.core.memory import retain_freed_memory
from mmrl.runs import RunDirError, atomic_write_json, atomic_write_text, load_run_config, new_output_dir, publish_dir, resolve_device

MODEL_FILES = ("best_model.zip", "final_model.zip")
#: reference policies every built-in env offers; an env may offer more (``careful``, ``planner`` ...)
REFERENCE_POLICIES = ("random", "greedy", "oracle")
METRICS_SCHEMA_VERSION = 1
#: replay videos enlarge the observation image to about this many pixels unless video.scale is set
VIDEO_IMAGE_SIZE = 256


@dataclass
class VideoConfig:
    """Replay videos."""

    episodes: int = 2
    """How many of the first episodes get a video, besides the chosen ones (0: no videos at all)."""
    chosen: bool = True
    """Also the best, median and worst episodes by return (found in the evaluation, then replayed with the same
    seeds to record them)."""
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
    """A reference policy the env offers (``random``, ``greedy``, ``oracle``/``myopic``, ``planner`` ...): evaluate it
    instead of a run."""
    episodes: int = 100
    """Episodes, all run at once (one per batch row)."""
    seed: int = 1_000_000
    """Episode ``i`` is seeded ``seed + i``."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``auto``: where the env and the model run."""
    deterministic: bool = True
    """The agent takes its most likely action (``false``: sampled, with torch seeded from ``seed``)."""
    baselines: Optional[list[str]] = None  # noqa: UP045 (OmegaConf needs typing.Optional here)
    """Reference policies evaluated on the same episodes (``None``: every one the env offers; ``myopic`` is
    ``oracle``'s other name and is not run twice)."""
    threads: int = 1
    """``torch.set_num_threads``."""
    unsafe_pickle: bool = False
    """Load the model with SB3's ``<Algo>.load``, which unpickles the zip's ``data`` entry and so can run code from
    the file: only for zips you trust. By default the model is built from the run's ``config.yaml`` and only the
    zip's tensors are read."""
    video: VideoConfig = field(default_factory=VideoConfig)
    extractor: Optional[ExtractorConfig] = None  # noqa: UP045
    """Not used by evaluation (a run's model is built from its own ``config.yaml``): the training extractor an env
    config brings along (``env=navigate`` chooses ``extractor=concat`` for training)."""
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
        elif f.name == "extractor":
            continue
        elif f.name == "video":
            keys += [f"video.{g.name}" for g in dataclasses.fields(VideoConfig)]
        else:
            keys.append(f.name)
    return keys


def _env_choices() -> list[str]:
    from importlib.resources import files

    return sorted(p.name[:-5] for p in files("mmrl.configs").joinpath("env").iterdir() if p.name.endswith(".yaml"))


def compose_config(overrides: Sequence[str] = ()) -> EvaluateConfig:
    """The evaluation config from ``configs/evaluate.yaml`` and ``key=value`` overrides, as an :class:`EvaluateConfig`.

    :raises EvaluationError: for a bad key or value, naming the valid keys (or env choices)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _register_schemas()
    GlobalHydra.instance().clear()
    # env.options holds the env's keyword arguments, which the env itself checks (naming its valid ones):
    # let env.options.x=v set an option the env config does not list, without Hydra's "+" prefix.
    overrides = [f"++{o}" if o.startswith("env.options.") else o for o in overrides]
    if bad := [o for o in overrides if o.lstrip("+~").split("=")[0].split(".")[0] == "extractor"]:
        raise EvaluationError(f"unknown key {bad[0].split('=')[0]!r}: the extractor is the run's (its config.yaml)\n"
                              f"valid keys: {', '.join(valid_keys())}")
    try:
        with initialize_config_module(config_module="mmrl.configs", version_base=None):
            return OmegaConf.to_object(compose(config_name="evaluate", overrides=overrides))  # type: ignore[return-value]
    except (HydraException, OmegaConfBaseException) as error:
        from mmrl.train import did_you_mean

        message = str(error).split("\nConfig search path")[0].strip()
        keys = [k.split("=")[0] for k in valid_keys()]
        if message.startswith("Could not override"):
            key = message.split(chr(39))[1]
            message = f"unknown key {key!r}{did_you_mean(key, keys)}"
        elif message.startswith("In 'evaluate': Could not find 'env/"):
            choice = message.split("'env/")[1].split("'")[0]
            message = f"env={choice}: no such env config{did_you_mean(choice, _env_choices())}"
        elif error.__cause__ is not None:
            message += f": {str(error.__cause__).splitlines()[0]}"
        hint = f"valid keys: {', '.join(valid_keys())}; env choices: {', '.join(_env_choices())}"
        raise EvaluationError(f"{message}\n{hint}") from None


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def load_run_model(run_dir: Path, device: str, unsafe_pickle: bool = False) -> tuple[Any, Path, list[str]]:
    """The run's model and the file it came from: ``best_model.zip``, else ``final_model.zip`` (a file that does not
    load is skipped, and said so). The model is built from the run's ``config.yaml`` and only its weights are read
    from the zip (``torch.load(weights_only=True)``), so a file from someone else runs no code; ``unsafe_pickle``
    loads with SB3's ``<Algo>.load`` instead, which unpickles the zip's ``data`` entry (only for files you trust).

    :returns: ``(model, path, skipped)``, ``skipped`` naming the files that did not load and why.
    :raises EvaluationError: when no model file loads."""
    from mmrl.agents.builders import algorithm_class, is_off_policy
    from mmrl.train import build_model, saved_train_config

    try:
        config = saved_train_config(run_dir)
        cls = algorithm_class(config.algo.name, config.algo.device_resident)
    except (RunDirError, ValueError, ImportError) as error:
        raise EvaluationError(f"cannot load the model of {run_dir}: {error}") from None
    skipped: list[str] = []
    for name in MODEL_FILES:
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            if unsafe_pickle:
                return cls.load(path, device=device), path, skipped
            if is_off_policy(config.algo.name):  # evaluation needs no replay buffer
                config.algo.hyperparams = {**config.algo.hyperparams, "buffer_size": 1, "learning_starts": 0}
            vec = mmrl.make_vec(config.env.id, num_envs=1, device=device, as_tensors=config.algo.device_resident,
                                **config.env.options)  # fmt: skip
            with warnings.catch_warnings():
                # one instance makes a rollout shorter than the training mini-batch; evaluation never trains
                warnings.filterwarnings("ignore", message="You have specified a mini-batch size", category=UserWarning)
                model = build_model(config, vec, device)
            model.set_parameters(str(path), exact_match=True, device=device)
            return model, path, skipped
        except Exception as error:  # noqa: BLE001 - a damaged file of any kind: try the next one
            skipped.append(f"{name}: {type(error).__name__}: {error}")
    found = "; ".join(skipped) if skipped else f"neither {' nor '.join(MODEL_FILES)} exists"
    raise EvaluationError(f"no loadable model in run directory {run_dir}: {found}")


def evaluation_device(config: EvaluateConfig) -> str:
    """``config.device`` resolved (``auto`` -> ``cuda`` when available).

    :raises EvaluationError: for an unknown or unavailable device."""
    try:
        return resolve_device(config.device)
    except ValueError as error:
        raise EvaluationError(str(error)) from None


# ---------------------------------------------------------------------------------------------- evaluation
def _evaluate_into(
    out_dir: Path,
    config: EvaluateConfig,
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
    from mmrl.episodes import run_episodes
    from mmrl.metrics import CI_METHOD, episode_metrics, gap_share, task_metrics_for
    from mmrl.report import write_report
    from mmrl.video import EpisodeRecorder, poster_index, replay_frames, step_rows, write_mp4, write_png

    task = task_metrics_for(env)
    sum_keys = task.sum_keys if task else ()
    names = [evaluated] + [b for b in config.baselines if b != evaluated]
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    skipped: dict[str, str] = {}
    returns: dict[str, np.ndarray] = {}

    def actor_of(name: str) -> Any:
        """A fresh actor for ``name``: each run of it starts from the same state and seeds."""
        if name == "agent":
            assert policy is not None
            if not config.deterministic:
                torch.manual_seed(config.seed)
            return policy
        return make_reference_policy(name, env, seed=config.seed)

    for name in names:
        start = time.perf_counter()
        try:
            actor = actor_of(name)
        except (ValueError, KeyError, AttributeError) as error:
            if name == evaluated:
                raise EvaluationError(str(error)) from None
            skipped[name] = str(error)
            continue
        stats = run_episodes(env, actor.act, seed=config.seed, update=actor.update, sum_keys=sum_keys)
        results[name] = episode_metrics(stats, task)
        returns[name] = np.asarray(stats.returns, dtype=np.float64)
        timings[name] = round(time.perf_counter() - start, 3)
    reference = next((name for name in ("planner", "oracle", "myopic") if name in results), None)
    random_ci = results["random"]["episode_return"]["ci95"] if "random" in results else None
    for values in results.values():
        values["share_of_gap"] = (
            gap_share(values["episode_return"]["mean"], results["random"]["episode_return"]["mean"],
                      results[reference]["episode_return"]["mean"])
            if reference is not None and "random" in results else None
        )  # fmt: skip
        # "better than random" only when the 95% intervals are apart: an overlap is no evidence of learning
        values["better_than_random"] = None if random_ci is None else bool(values["episode_return"]["ci95"][0] > random_ci[1])

    # Videos of chosen episodes: the evaluation above found each episode's return; the evaluated policy now runs
    # again on the same seeds, recording only those rows (an episode is a function of its seed and the policy; a
    # stochastic agent samples the same actions after the same torch seed, checked by comparing the returns).
    videos_meta = []
    chosen = choose_episodes(returns[evaluated], config.video.episodes, config.video.chosen) if config.video.episodes > 0 else {}
    if chosen:
        start = time.perf_counter()
        recorder = EpisodeRecorder(env, list(chosen), config.seed)
        actor = actor_of(evaluated)
        run_episodes(env, recorder.wrap_act(actor.act), seed=config.seed, update=recorder.wrap_update(actor.update))
        timings["videos"] = round(time.perf_counter() - start, 3)
        (out_dir / "videos").mkdir()
    image_height = env.single_observation_space["image"].shape[1]
    scale = config.video.scale if config.video.scale is not None else max(1, round(VIDEO_IMAGE_SIZE / image_height))
    for (row, labels), trajectory in zip(chosen.items(), recorder.trajectories if chosen else [], strict=True):
        frames = replay_frames(env, trajectory, scale=scale)
        name = f"videos/episode-{row:04d}.mp4"
        write_mp4(out_dir / name, frames, fps=float(config.video.fps))
        poster = f"videos/episode-{row:04d}-poster.png"
        write_png(out_dir / poster, frames[poster_index(trajectory)])
        height, width = frames[0].shape[:2]
        recorded = trajectory.returns[-1] if trajectory.returns else 0.0
        videos_meta.append({
            "file": name, "poster": poster, "poster_frame": poster_index(trajectory), "episode": row, "seed": trajectory.seed,
            "labels": labels,
            "length": trajectory.length, "frames": len(frames), "return": recorded, "fps": float(config.video.fps),
            "width": width + width % 2, "height": height + height % 2, "codec": "h264",
            "reproduced": bool(abs(recorded - returns[evaluated][row]) < 1e-4), "end": trajectory.end,
            "steps": step_rows(env, trajectory),
        })  # fmt: skip

    metrics = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "created": now.isoformat(timespec="seconds"),
        "evaluated": evaluated,
        "source": source,
        "env": {"name": env_cfg.get("name"), "id": env_cfg["id"], "options": env_cfg.get("options", {})},
        "episodes": config.episodes,
        "seed": config.seed,
        "seeds": [config.seed, config.seed + config.episodes - 1],
        "deterministic": config.deterministic,
        "device": str(env.device),
        "ci_method": CI_METHOD,
        "gap_reference": reference,
        "policies": results,
        "skipped_baselines": skipped,
        "videos": videos_meta,
        # what the replays show: the env's legend, and whether the action is outlined on the picture
        "replay": {"legend": str(getattr(env, "legend", "") or ""), "action_outlined": callable(getattr(env, "slot_box", None))},
        "seconds": timings,
    }
    atomic_write_json(out_dir / "metrics.json", metrics)
    write_episode_returns(out_dir / "episode_returns.csv", config.seed, returns)
    title = f"Evaluation of {run_dir.name if run_dir else f'{config.policy} policy'} on {env_cfg['id']}"
    write_report(out_dir, metrics, run_dir=run_dir, title=title, episode_returns=returns)
    atomic_write_json(out_dir / "evaluate_config.json", dataclasses.asdict(config))


def choose_episodes(returns: np.ndarray, first: int, chosen: bool = True) -> dict[int, list[str]]:
    """The episodes (rows) that get a video and their labels: the ``first`` ones, then, with ``chosen``, the best,
    the median and the worst by return (the lowest row among equal returns; one row may carry several labels).

    :returns: ``{row: labels}`` in the order the report shows them."""
    picked: dict[int, list[str]] = {row: ["first"] for row in range(min(first, len(returns)))}
    if chosen and len(returns):
        order = np.lexsort((np.arange(len(returns)), returns))  # by return, then by row
        best = int(np.flatnonzero(returns == returns.max())[0])
        for label, row in (("best", best), ("median", int(order[(len(returns) - 1) // 2])), ("worst", int(order[0]))):
            picked.setdefault(row, []).append(label)
    return picked


def write_episode_returns(path: Path, seed: int, returns: dict[str, np.ndarray]) -> None:
    """``episode_returns.csv``: one row per episode (its seed), one column per policy."""
    names = list(returns)
    lines = [",".join(["episode", "seed", *names])]
    count = len(next(iter(returns.values()))) if returns else 0
    for i in range(count):
        lines.append(",".join([str(i), str(seed + i), *(f"{returns[n][i]:.6g}" for n in names)]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _check(config: EvaluateConfig) -> None:
    """The checks of values the schema's types do not cover.

    :raises EvaluationError: naming the bad value."""
    if config.episodes < 1:
        raise EvaluationError(f"episodes must be >= 1; got {config.episodes}")
    video = config.video
    if video.episodes < 0 or video.fps <= 0 or (video.scale is not None and video.scale < 1):
        raise EvaluationError(f"video.episodes must be >= 0, video.fps > 0, video.scale >= 1; got {dataclasses.asdict(video)}")
    if (config.run is None) == (config.policy is None):
        raise EvaluationError("give either run=<run directory> or policy=<random|greedy|oracle|planner...> (one of them)")


def _check_policies(config: EvaluateConfig, env: Any) -> list[str]:
    """The baselines to run: the ones asked for, checked against what ``env`` offers (which ``policy=`` must be too).

    :raises EvaluationError: naming the unknown policy and the env's policies."""
    from mmrl.agents.reference import policy_names

    offered = policy_names(env)
    asked = [config.policy] if config.policy is not None else []
    bad = [name for name in [*asked, *(config.baselines or [])] if name not in offered]
    if bad:
        from mmrl.train import did_you_mean

        raise EvaluationError(f"{type(env).__name__} has no reference policy {bad}{did_you_mean(bad[0], offered)}; it offers {offered}")
    if config.baselines is not None:
        return list(config.baselines)
    # random first, then the env's own policies, then the myopic oracle and the planner: from weakest to strongest
    default = [name for name in offered if name != "myopic"]
    return sorted(default, key=lambda name: (name == "planner", name == "oracle", name != "random"))


def write_evaluation(config: EvaluateConfig, overrides: Sequence[str] = ()) -> Path:
    """Run one evaluation as ``config`` says and write it into a new folder; returns that folder.

    :param overrides: the command-line overrides, to tell which ``env.options`` to apply on top of a run's env.
    :raises EvaluationError: for a bad run directory or a bad value.
    """
    _check(config)
    torch.set_num_threads(max(1, config.threads))
    device = evaluation_device(config)
    now = dt.datetime.now()
    stamp = now.strftime("%Y%m%d-%H%M%S")

    model = None
    run_dir: Path | None = None
    if config.run is not None:
        run_dir = Path(config.run)
        try:
            run_cfg = load_run_config(run_dir)
        except RunDirError as error:
            raise EvaluationError(str(error)) from None
        if any(_override_key(o) == "env" for o in overrides):
            raise EvaluationError("with run=, the env is the run's own; drop env=<name> (env.options.* overrides apply)")
        env_cfg = dict(run_cfg["env"])
        env_cfg["options"] = dict(env_cfg.get("options") or {})
        for override in overrides:
            key = _override_key(override)
            if key.startswith("env.options."):
                option = key[len("env.options.") :]
                env_cfg["options"][option] = config.env.options[option]
        algo = run_cfg["algo"]
        model, model_path, skipped_models = load_run_model(run_dir, device, config.unsafe_pickle)
        for reason in skipped_models:
            print(f"mmrl.evaluate: warning: skipped {reason}", file=sys.stderr)
        source = {"kind": "run", "run_dir": str(run_dir.resolve()), "model": model_path.name, "algo": str(algo["name"]),
                  "train_seed": run_cfg.get("seed"), "skipped_models": skipped_models}  # fmt: skip
        evaluated = "agent"
        default_out = run_dir / f"eval-{stamp}"
    else:
        env_cfg = dataclasses.asdict(config.env)
        source = {"kind": "policy", "policy": config.policy}
        evaluated = str(config.policy)
        default_out = Path("runs") / f"eval-{env_cfg.get('name', 'env')}-{config.policy}-{stamp}"

    try:
        env = mmrl.make_batched(env_cfg["id"], num_envs=config.episodes, device=device, **env_cfg.get("options", {}))
    except (TypeError, ValueError, KeyError) as error:
        raise EvaluationError(f"cannot build env {env_cfg['id']} with options {env_cfg.get('options')}: {error}") from None
    try:
        policy = ModelPolicy(model, env, config.deterministic) if model is not None else None
    except ValueError as error:
        raise EvaluationError(str(error)) from None
    config = dataclasses.replace(config, baselines=_check_policies(config, env))

    try:
        final = Path(config.out if config.out is not None else default_out)
        # written in a hidden folder beside the final one and renamed into place when complete: an evaluation that
        # is killed never leaves a folder whose metrics.json looks final
        out_dir = new_output_dir(final.with_name(f".{final.name}.partial"))
    except RunDirError as error:
        raise EvaluationError(str(error)) from None
    try:
        _evaluate_into(out_dir, config, env, env_cfg, policy, evaluated, source, run_dir, now)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)  # our own new folder: no half-written evaluation is left
        raise
    try:
        return publish_dir(out_dir, final)
    except RunDirError as error:
        raise EvaluationError(str(error)) from None


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """A short text table of the metrics for the terminal."""
    reference = metrics.get("gap_reference")
    lines = [f"{'policy':<10} {'return (95% CI)':<28} {'length':>7}" + (f"  share of random->{reference} gap" if reference else "")]
    for name, values in metrics["policies"].items():
        ret, length = values["episode_return"], values["episode_length"]
        extra = "  ".join(
            f"{k}={v['mean']:.3f}" if isinstance(v, dict) else f"{k}={v:.3f}"
            for k, v in values["task"].items()
            if k in ("click_through_rate", "regret_vs_oracle")
        )
        ci = f"{ret['mean']:.3f} [{ret['ci95'][0]:.3f}, {ret['ci95'][1]:.3f}]"
        share = values.get("share_of_gap")
        share = "" if share is None else f"  {100 * share:5.0f}%"
        lines.append(f"{name:<10} {ci:<28} {length['mean']:>7.2f}{share}  {extra}")
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
        config = compose_config(overrides)
        if show:
            from omegaconf import OmegaConf

            print(OmegaConf.to_yaml(config))
            return 0
        if evaluation_device(config) == "cpu":
            # The env allocates fresh observation buffers every step; keeping freed pages in the process (instead
            # of handing them back to the OS) spares a page fault per page touched again.
            retain_freed_memory()
        out_dir = write_evaluation(config, overrides)
    except EvaluationError as error:
        print(f"mmrl.evaluate: error: {error}", file=sys.stderr)
        return 2
    metrics = json.loads((out_dir / "metrics.json").read_text())
    print("\n".join(summary_lines(metrics)))
    print(f"wrote {out_dir}/ (metrics.json, report.html, {len(metrics['videos'])} videos)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
