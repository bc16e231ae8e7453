"""``python -m mmrl.train``: train an SB3 agent with :class:`mmrl.MultimodalExtractor` on an mmrl env, from a Hydra config.

Usage::

    python -m mmrl.train                                   # PPO + FiLM extractor on Recommend, CPU, minutes
    python -m mmrl.train algo=dqn extractor=concat n_envs=64 seed=3 total_timesteps=300000
    python -m mmrl.train env.options.slate_size=6 extractor.features_dim=256 algo.hyperparams.learning_rate=1e-3
    python -m mmrl.train algo.device_resident=true n_envs=256   # FastPPO: buffers on the env's device
    python -m mmrl.train experiment=navigate               # a learning setup of configs/experiment/
    python -m mmrl.train resume=runs/<run-dir>              # continue a killed run from its last good checkpoint
    python -m mmrl.train --multirun seed=0,1 extractor=concat,film
    python -m mmrl.train --cfg job                         # print the composed config and exit

The run directory (``run_dir``) gets ``config.yaml`` (the resolved config), ``checkpoints/`` (written atomically,
the last ``keep_checkpoints`` kept), ``progress.csv`` and ``tb/`` (TensorBoard), ``evaluations.csv``,
``best_model.zip``, ``final_model.zip``, ``summary.json`` and ``train.log`` (Hydra's log records, the progress
lines and the end-of-run summary). ``--help`` lists the config groups, their options and every key with its meaning;
a misspelt key or value fails before Hydra makes any folder (:func:`check_command_line`).

Hydra and OmegaConf are used by the entry point only (:func:`main`, :func:`compose_config`, :func:`to_train_config`):
they turn the command line into a :class:`~mmrl.configs.schema.TrainConfig` once, and everything after that
(:func:`train` and what it calls) takes plain values. This module is the one place where that config becomes
constructor arguments.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import gc
import inspect
import io
import logging
import math
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import CSVOutputFormat, HParam, Image, KVWriter, Logger, TensorBoardOutputFormat
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

import mmrl
from mmrl.agents import builders
from mmrl.agents.model_policy import ModelPolicy
from mmrl.agents.reference import make_reference_policy, policy_names
from mmrl.checkpoints import CHECKPOINT_DIR, load_latest_checkpoint, save_checkpoint, save_model
from mmrl.configs.schema import AlgoConfig, EnvConfig, ExtractorConfig, TrainConfig
from mmrl.core.batched_env import BatchedEnv
from mmrl.core.memory import retain_freed_memory
from mmrl.episodes import EpisodeStats, run_episodes
from mmrl.metrics import gap_share, summarize, t_quantile_975, task_metrics_for
from mmrl.runs import (
    CONFIG_FILE, SUMMARY_FILE, RunDirError, atomic_write_json, atomic_write_text, atomic_write_yaml,
    check_run_dir_name, load_run_config, resolve_device, unique_run_dir,
)  # fmt: skip
from mmrl.stop_signals import StopSignals

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from mmrl.video import Trajectory

log = logging.getLogger("mmrl.train")

#: command-line keys that still apply when resuming (the rest comes from the run's saved config)
RESUME_OVERRIDABLE = ("resume", "restart", "progress", "threads")
#: ``resume=auto``: resume the run in ``run_dir`` when it exists there, else start it there (for requeued jobs)
AUTO_RESUME = "auto"


class ConfigError(ValueError):
    """A config that cannot run; reported as one line, without a traceback."""


# ----------------------------------------------------------------------------- config -> arguments
def extractor_kwargs(config: TrainConfig) -> dict[str, Any]:
    """Keyword arguments of :class:`mmrl.MultimodalExtractor` from ``config.extractor`` (``None`` means its default)."""
    kwargs = {k: v for k, v in dataclasses.asdict(config.extractor).items() if v is not None}
    for key in ("modalities", "image_channels", "extra_keys"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    return kwargs


#: per-env algorithm settings and budgets, one file per (algorithm, env) as RL Zoo keeps them: configs/tuned/<algo>/<env>.yaml
TUNED_GROUP = "tuned"


def tuned_settings(env_name: str) -> list[str]:
    """The algorithms with settings tuned for the env config ``env_name`` (``configs/tuned/<algo>/<env_name>.yaml``)."""
    from importlib.resources import files

    folder = files("mmrl.configs").joinpath(TUNED_GROUP)
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and p.joinpath(f"{env_name}.yaml").is_file())


def untuned_note(config: TrainConfig) -> str | None:
    """``None`` when ``config``'s algorithm has settings tuned for its env, else one line saying that the run uses the
    algorithm's generic settings, which are not known to learn the env, and which algorithms are tuned for it."""
    tuned = tuned_settings(config.env.name)
    if config.algo.name in tuned:
        return None
    hint = f"settings tuned for env={config.env.name}: {', '.join(f'algo={a}' for a in tuned)}" if tuned else (
        f"no algorithm is tuned for env={config.env.name} yet")
    return (
        f"note: algo={config.algo.name} has no settings tuned for env={config.env.name} "
        f"(configs/{TUNED_GROUP}/{config.algo.name}/{config.env.name}.yaml): it runs with {config.algo.name}'s generic "
        f"settings, which are not known to learn this env in {config.total_timesteps:,} steps; {hint}"
    )


def check_config(config: TrainConfig) -> None:
    """Checks done before anything is built: ranges, the env id, the algorithm and its hyper-parameters, the device.

    :raises ConfigError: naming the bad key or value (and the valid choices where there is a list)."""
    try:
        positive = ("n_envs", "total_timesteps", "threads", "eval_episodes", "keep_checkpoints", "log_interval")
        bad = [f"{k}={getattr(config, k)}" for k in positive if getattr(config, k) < 1]
        bad += [f"{k}={getattr(config, k)}" for k in ("checkpoint_every", "eval_every") if getattr(config, k) < 0]
        if bad:
            raise ValueError(f"these must be positive (checkpoint_every, eval_every: >= 0): {', '.join(bad)}")
        if not 0 <= config.seed < 2**32:  # numpy's and SB3's seeding take 32-bit seeds
            raise ValueError(f"seed must be an integer in [0, 2**32); got {config.seed}")
        if config.env.id not in mmrl.ENV_CLASSES:
            raise ValueError(f"unknown env id {config.env.id!r}; registered: {sorted(mmrl.ENV_CLASSES)}")
        for key, choices in extractor_choices().items():
            value = getattr(config.extractor, key)
            if value not in choices:
                raise ValueError(f"extractor.{key}={value!r} is not one of {list(choices)}{did_you_mean(str(value), choices)}")
        check_hyperparameters(config)
        resolve_device(config.device)
    except (ValueError, ImportError, KeyError) as error:
        raise ConfigError(str(error)) from error
    check_env_options(config)


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` to a misspelt ``word`` (``""`` when none is close)."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def extractor_choices() -> dict[str, tuple[str, ...]]:
    """The named choices of :class:`ExtractorConfig` and their valid values (checked before anything is built)."""
    from mmrl.extractors.fusion import FUSIONS
    from mmrl.extractors.multimodal import IMAGE_ENCODER_NAMES, TEXT_ENCODER_NAMES

    return {"fusion": tuple(sorted(FUSIONS)), "image_encoder": tuple(IMAGE_ENCODER_NAMES), "text_encoder": tuple(TEXT_ENCODER_NAMES)}


def check_hyperparameters(config: TrainConfig) -> None:
    """:func:`mmrl.agents.builders.check_algo_kwargs`, with a did-you-mean for a misspelt hyper-parameter.

    :raises ValueError: naming the bad key or value."""
    try:
        builders.check_algo_kwargs(config.algo.name, config.algo.hyperparams, config.algo.device_resident)
    except ValueError as error:
        cls = builders.algorithm_class(config.algo.name, config.algo.device_resident)
        valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unknown = [k for k in config.algo.hyperparams if k not in valid]
        hint = did_you_mean(unknown[0], valid) if unknown else ""
        raise ValueError(f"{error}{hint}") from None


def check_env_options(config: TrainConfig) -> None:
    """Build one instance of the env on the CPU with ``config.env.options``: the env checks its options' names
    (naming the valid ones) and values, in a fraction of a second, before the run's envs and folder exist.

    :raises ConfigError: with the env's message."""
    try:
        mmrl.make_batched(config.env.id, num_envs=1, device="cpu", **config.env.options)
    except (ValueError, TypeError, KeyError, OSError) as error:
        raise ConfigError(f"env {config.env.id} with options {config.env.options}: {error}") from None


def make_train_env(config: TrainConfig, device: str) -> Any:
    """The SB3 VecEnv of ``n_envs`` instances (instance ``i`` seeded ``seed + i`` at the first reset); its tensor
    face for a device-resident agent."""
    return mmrl.make_vec(
        config.env.id,
        num_envs=config.n_envs,
        device=device,
        seed=config.seed,
        as_tensors=config.algo.device_resident,
        compile=config.env.compile,
        **config.env.options,
    )


def make_eval_env(config: TrainConfig, device: str) -> BatchedEnv:
    """One batched env of ``eval_episodes`` instances: an evaluation is one episode in each."""
    return mmrl.make_batched(config.env.id, num_envs=config.eval_episodes, device=device, **config.env.options)


def build_model(config: TrainConfig, env: Any, device: str) -> BaseAlgorithm:
    """A new model of ``config.algo`` on ``env`` (from :func:`make_train_env`), with the configured extractor."""
    return builders.build_algorithm(
        config.algo.name, env, extractor_kwargs(config), config.algo.hyperparams, config.seed, device,
        policy_kwargs=config.algo.policy_kwargs, device_resident=config.algo.device_resident,
    )  # fmt: skip


# ----------------------------------------------------------------------------- evaluation
def evaluation_returns(model: BaseAlgorithm, env: BatchedEnv, seed: int) -> np.ndarray:
    """Returns of one greedy episode of ``model`` per instance of ``env`` (instance ``i`` seeded ``seed + i``)."""
    return evaluate_model(model, env, seed)[0].returns


def evaluate_model(model: BaseAlgorithm, env: BatchedEnv, seed: int) -> tuple[EpisodeStats, Trajectory]:
    """One greedy episode of ``model`` per instance of ``env`` (instance ``i`` seeded ``seed + i``), with the env's
    task-metric sums, and the recorded trajectory of the first episode (for a replay strip)."""
    from mmrl.video import EpisodeRecorder

    policy = ModelPolicy(model, env, deterministic=True)
    task = task_metrics_for(env)
    recorder = EpisodeRecorder(env, 1, seed)
    stats = run_episodes(env, recorder.wrap_act(policy.act), seed=seed, update=recorder.wrap_update(policy.update),
                         sum_keys=task.sum_keys if task else ())  # fmt: skip
    return stats, recorder.trajectories[0]


#: frames of the first evaluation episode shown in TensorBoard at each evaluation (start, then evenly spaced)
STRIP_FRAMES = 4
#: log formats that only take numbers: images and hyper-parameters go to TensorBoard alone
NOT_TENSORBOARD = ("stdout", "log", "json", "csv")


def replay_strip(env: BatchedEnv, trajectory: Trajectory, frames: int = STRIP_FRAMES) -> np.ndarray:
    """HWC uint8: up to ``frames`` replay frames of ``trajectory`` (the first, then evenly spaced to the last),
    stacked top to bottom, as the replay videos of ``mmrl.evaluate`` draw them."""
    from mmrl.video import replay_frame

    last = len(trajectory.images) - 1
    steps = sorted({round(i * last / max(frames - 1, 1)) for i in range(frames)}) if last > 0 else [0]
    pictures = [replay_frame(env, trajectory, t) for t in steps]
    width = max(p.shape[1] for p in pictures)
    padded = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0))) for p in pictures]
    return np.concatenate(padded, axis=0)


def task_scalars(values: dict[str, object]) -> dict[str, float]:
    """The numbers of a task-metrics dict (a summary dict gives its mean), for the logger."""
    out = {}
    for name, value in values.items():
        if isinstance(value, dict) and "mean" in value:
            value = value["mean"]
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


#: the reference policies a run is measured against, where the env offers them: the gap is from ``random`` to the
#: last one offered (``planner``, the upper bound of a sequential task, else the myopic ``oracle``)
REFERENCES = ("random", "oracle", "planner")


def reference_returns(env: BatchedEnv, seed: int) -> dict[str, np.ndarray]:
    """Per-episode returns of each of :data:`REFERENCES` that ``env`` offers, on the evaluation episodes."""
    out = {}
    for name in REFERENCES:
        if name in policy_names(env):
            policy = make_reference_policy(name, env, seed=seed)
            out[name] = run_episodes(env, policy.act, seed=seed, update=policy.update).returns
    return out


def summarize_spread(mean: float, std: float, episodes: int) -> list[float]:
    """The 95% interval of a mean return from its episodes' mean and (population) standard deviation."""
    if episodes < 2:
        return [mean, mean]
    half = t_quantile_975(episodes - 1) * std * (episodes / (episodes - 1)) ** 0.5 / episodes**0.5
    return [mean - half, mean + half]


# ----------------------------------------------------------------------------- callbacks and logging
class RunCallback(BaseCallback):
    """Evaluates every ``eval_every`` steps (keeping ``best_model.zip``) and checkpoints every ``checkpoint_every``.

    Both happen at the start of a rollout, when the steps collected so far have all been trained on, so a
    checkpoint is a consistent point to resume from.

    :param run_dir: where ``evaluations.csv``, ``best_model.zip`` and ``checkpoints/`` go.
    :param eval_env: the batched env of the evaluation episodes (one per instance).
    :param state: the trainer's state (best evaluation, evaluations so far), checkpointed with the model.
    :param eval_every: env steps between evaluations (0: only those asked for by :meth:`record_evaluation`).
    :param checkpoint_every: env steps between checkpoints (0: only those asked for by :meth:`checkpoint`).
    :param keep_checkpoints: how many of the latest checkpoints to keep.
    :param eval_seed: evaluation episode ``i`` is seeded ``eval_seed + i``.
    :param compiled_env: the training env is compiled (see :meth:`_on_rollout_end`).
    :param stop: the run's stop signals: learning ends at the step after one is received.
    :param gap: the random and reference mean returns, to log each evaluation's share of the gap between them.
    """

    def __init__(
        self, run_dir: Path, eval_env: BatchedEnv, state: dict[str, Any], *, eval_every: int, checkpoint_every: int,
        keep_checkpoints: int, eval_seed: int, compiled_env: bool = False, stop: StopSignals | None = None,
        gap: tuple[float, float] | None = None,
    ):  # fmt: skip
        super().__init__()
        self.gap = gap
        self.stop = stop
        self.run_dir = run_dir
        self.eval_env = eval_env
        self.state = state
        self.eval_every = eval_every
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.eval_seed = eval_seed
        self.compiled_env = compiled_env
        self.gc_frozen = False

    def _next(self, every: int, last: int) -> int:
        return math.inf if every <= 0 else (last // every + 1) * every  # type: ignore[return-value]

    def _on_training_start(self) -> None:
        self.rollout_start = self.num_timesteps
        self.next_eval = self._next(self.eval_every, self.state.get("last_eval_step", 0))
        self.next_checkpoint = self._next(self.checkpoint_every, self.num_timesteps)

    def _on_rollout_start(self) -> None:
        self.rollout_start = self.num_timesteps
        if self.num_timesteps >= self.next_eval:
            self.record_evaluation()
            self.next_eval = self._next(self.eval_every, self.num_timesteps)
        if self.num_timesteps >= self.next_checkpoint:
            self.checkpoint()
            self.next_checkpoint = self._next(self.checkpoint_every, self.num_timesteps)

    def _on_step(self) -> bool:
        return self.stop is None or self.stop.received is None  # False ends model.learn at this step

    def _on_rollout_end(self) -> None:
        # A compiled env leaves a great many long-lived compiler objects behind, and every full pass of the garbage
        # collector walks them all, stalling a step. Once the first rollout has compiled everything, freeze them:
        # they move out of the collector's way for the rest of the run.
        if self.compiled_env and not self.gc_frozen:
            gc.collect()
            gc.freeze()
            self.gc_frozen = True

    def record_evaluation(self) -> float:
        """Evaluate the current policy, log it, keep it as ``best_model.zip`` if it is the best so far."""
        stats, trajectory = evaluate_model(self.model, self.eval_env, self.eval_seed)
        returns = stats.returns
        mean, std = float(returns.mean()), float(returns.std())
        step = self.num_timesteps
        self.state["last_eval_step"] = step
        self.state.setdefault("evaluations", []).append({"step": step, "mean_return": mean, "std_return": std})
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=["step", "mean_return", "std_return"])
        writer.writeheader()
        writer.writerows(self.state["evaluations"])
        atomic_write_text(self.run_dir / "evaluations.csv", table.getvalue())
        best = self.state.get("best")
        if best is None or mean > best["mean_return"]:
            save_model(self.model, self.run_dir / "best_model.zip")
            self.state["best"] = {"step": step, "mean_return": mean}
        self.logger.record("eval/mean_return", mean)
        self.logger.record("eval/std_return", std)
        self.logger.record("eval/best_return", self.state["best"]["mean_return"])
        share = gap_share(mean, *self.gap) if self.gap is not None else None
        if share is not None:
            self.logger.record("eval/share_of_gap", share)
        task = task_metrics_for(self.eval_env)
        if task is not None:
            for name, value in task_scalars(task.compute(stats)).items():
                self.logger.record(f"eval/task/{name}", value)
        self.logger.record("eval/replay", Image(replay_strip(self.eval_env, trajectory), "HWC"), exclude=NOT_TENSORBOARD)
        self.logger.record("time/total_timesteps", step)
        self.logger.dump(step)  # now, so that TensorBoard files the evaluation under the step it was taken at
        return mean

    def checkpoint(self) -> None:
        batched = self.training_env.batched_env  # type: ignore[attr-defined]
        extra = {
            "trainer": dict(self.state),
            "env": {"seeds": batched.seeds.cpu().clone(), "episode": batched.episode.cpu().clone()},
        }
        save_checkpoint(self.model, self.run_dir / CHECKPOINT_DIR, extra, keep=self.keep_checkpoints)


class ProgressCallback(BaseCallback):
    """A rich progress bar: steps, fps and the recent mean episode return (``rollout/ep_rew_mean``)."""

    def __init__(self, total_timesteps: int):
        super().__init__()
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.total = total_timesteps
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[fps]} fps"),
            TextColumn("return {task.fields[ret]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            refresh_per_second=4,
        )  # fmt: skip
        self.task: Any = None
        self._last = 0.0

    def _on_training_start(self) -> None:
        self.rollout_start = self.num_timesteps
        self.start_steps, self.start_time = self.num_timesteps, time.perf_counter()
        self.progress.start()
        self.task = self.progress.add_task("train", total=self.total, completed=self.num_timesteps, fps="-", ret="-")

    def _on_step(self) -> bool:
        if self.num_timesteps > self.total:  # an off-policy run ends at the next whole collection step
            self.total = self.num_timesteps
            self.progress.update(self.task, total=self.total)
        now = time.perf_counter()
        if now - self._last > 0.25:
            self._last = now
            fps = (self.num_timesteps - self.start_steps) / max(now - self.start_time, 1e-9)
            buffer = self.model.ep_info_buffer
            ret = f"{np.mean([e['r'] for e in buffer]):.2f}" if buffer else "-"
            self.progress.update(self.task, completed=self.num_timesteps, fps=f"{fps:,.0f}", ret=ret)
        return True

    def _on_training_end(self) -> None:
        self.progress.update(self.task, completed=self.num_timesteps)
        self.progress.stop()


def end_step(model: BaseAlgorithm, total_timesteps: int) -> int:
    """The step a run of ``total_timesteps`` really ends at: an on-policy algorithm collects whole rollouts of
    ``n_steps * n_envs`` steps, so it ends at the next multiple of that (off-policy ones at most a collection step
    later, which the progress bar follows as it happens)."""
    if isinstance(model, OffPolicyAlgorithm) or not getattr(model, "n_steps", None):
        return total_timesteps
    rollout = int(model.n_steps) * int(model.n_envs)
    return -(-total_timesteps // rollout) * rollout


class OneLineOutput(KVWriter):
    """One short line per log interval: steps, fps, recent return, evaluation, losses."""

    #: (logger key, label, format, sign): SB3 logs the entropy *loss* (minus the policy's entropy), shown as entropy
    KEYS = (
        ("time/total_timesteps", "step", "{:,.0f}", 1), ("time/fps", "fps", "{:,.0f}", 1),
        ("rollout/ep_rew_mean", "return", "{:.2f}", 1), ("rollout/ep_len_mean", "len", "{:.1f}", 1),
        ("eval/mean_return", "eval", "{:.2f}", 1), ("train/loss", "loss", "{:.3g}", 1),
        ("train/entropy_loss", "entropy", "{:.3g}", -1), ("rollout/exploration_rate", "eps", "{:.2f}", 1),
    )  # fmt: skip

    def __init__(self, print_fn: Callable[[str], None] = print):
        self.print_fn = print_fn

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        parts = [f"{name} {fmt.format(sign * key_values[key])}" for key, name, fmt, sign in self.KEYS if key in key_values]
        self.print_fn(" | ".join(parts))

    def close(self) -> None:
        pass


def restart_csv(path: Path, up_to_step: int) -> CSVOutputFormat:
    """SB3's CSV writer on ``path``, keeping the rows of an earlier run up to ``up_to_step`` (for resuming)."""
    rows: list[dict[str, str]] = []
    fields: list[str] = []
    if path.exists():
        with open(path, newline="") as file:
            reader = csv.DictReader(file)
            fields = list(reader.fieldnames or [])
            rows = [r for r in reader if float(r.get("time/total_timesteps") or 0) <= up_to_step]
    writer = CSVOutputFormat(str(path))  # truncates the file
    if fields:
        writer.keys = fields
        out = csv.DictWriter(writer.file, fieldnames=fields)
        out.writeheader()
        out.writerows(rows)
        writer.file.flush()
    return writer


def make_logger(run_dir: Path, resumed_at: int | None, print_fn: Callable[[str], None]) -> Logger:
    """SB3 logger: a one-line console summary, ``progress.csv`` and TensorBoard under ``tb/``."""
    csv_path = run_dir / "progress.csv"
    csv_out = restart_csv(csv_path, resumed_at) if resumed_at is not None else CSVOutputFormat(str(csv_path))
    return Logger(str(run_dir), [OneLineOutput(print_fn), csv_out, TensorBoardOutputFormat(str(run_dir / "tb"))])


# ----------------------------------------------------------------------------- the run
def train(config: TrainConfig) -> dict[str, Any]:
    """Train (or, with ``config.resume``, resume) the run ``config`` describes; return the summary (also saved as
    ``summary.json``). A resumed run's ``config`` is its saved one (see :func:`to_train_config`).

    SIGTERM or SIGUSR1 stop the run at its next env step: it writes a checkpoint, says how to resume, and passes
    the signal on (see :mod:`mmrl.stop_signals`), so a scheduler's requeue continues where it stopped."""
    stop = StopSignals()
    with stop:
        summary = _train(config, stop)
    if summary is None:
        stop.hand_on()
        raise AssertionError("unreachable: hand_on exits")  # pragma: no cover
    return summary


def _train(config: TrainConfig, stop: StopSignals) -> dict[str, Any] | None:
    """:func:`train` with its stop signals; ``None`` when a signal stopped it (after writing a checkpoint)."""
    check_config(config)
    resume = config.resume
    if resume is not None:
        run_dir = Path(resume)
    else:
        run_dir = unique_run_dir(config.run_dir)
        config = dataclasses.replace(config, run_dir=str(run_dir))
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None:
        atomic_write_yaml(run_dir / CONFIG_FILE, dataclasses.asdict(config))

    try:
        env, eval_env, references, model, state, resumed_at = _start(config, run_dir, device)
    except BaseException:
        if resume is None:  # a run that never started leaves no folder that looks like a run
            discard_unstarted_run(run_dir)
        raise

    progress = ProgressCallback(end_step(model, config.total_timesteps)) if config.progress else None
    train_log = TrainLog(run_dir / TRAIN_LOG)
    console_print = progress.progress.console.print if progress else print

    def print_fn(line: str) -> None:
        console_print(line)
        train_log.write(line)

    model.set_logger(make_logger(run_dir, resumed_at, print_fn))
    if (note := untuned_note(config)) is not None:
        print_fn(note)
    run_callback = RunCallback(
        run_dir, eval_env, state, eval_every=config.eval_every, checkpoint_every=config.checkpoint_every,
        keep_checkpoints=config.keep_checkpoints, eval_seed=config.eval_seed, compiled_env=config.env.compile,
        stop=stop, gap=_gap(references),
    )  # fmt: skip
    callbacks: list[BaseCallback] = [run_callback] + ([progress] if progress else [])

    start_steps, start = model.num_timesteps, time.perf_counter()
    remaining = config.total_timesteps - model.num_timesteps
    if remaining > 0:
        model.learn(
            remaining, callback=CallbackList(callbacks), log_interval=config.log_interval,
            reset_num_timesteps=resumed_at is None, progress_bar=False,
        )  # fmt: skip
    wall = time.perf_counter() - start

    run_callback.init_callback(model)
    if stop.received is not None and model.num_timesteps < config.total_timesteps:
        if not isinstance(model, OffPolicyAlgorithm):
            # The cut rollout was never trained on and is dropped, as if it had not been collected: the checkpoint
            # is at a rollout boundary, so the resumed run ends at the same step as an uninterrupted one.
            model.num_timesteps = run_callback.rollout_start
        run_callback.checkpoint()
        model.logger.dump(model.num_timesteps)
        model.logger.close()
        message = (
            f"mmrl.train: stopped by {stop.received.name} at step {model.num_timesteps:,} of {config.total_timesteps:,}; "
            f"checkpoint written. Continue with: python -m mmrl.train resume={run_dir}"
        )
        print(message, file=sys.stderr, flush=True)
        train_log.write(message)
        return None
    if state.get("last_eval_step") == model.num_timesteps:  # e.g. resuming a run that had already finished
        final_return = state["evaluations"][-1]["mean_return"]
    else:
        final_return = run_callback.record_evaluation()
    model.logger.record("time/total_timesteps", model.num_timesteps)
    gap = _gap(references)
    final_metrics = {"eval/mean_return": final_return}
    if gap is not None and (share := gap_share(final_return, *gap)) is not None:
        final_metrics["eval/share_of_gap"] = share
    model.logger.record("hparams", HParam(hyperparameters(config), final_metrics), exclude=NOT_TENSORBOARD)
    model.logger.dump(model.num_timesteps)
    run_callback.checkpoint()
    save_model(model, run_dir / "final_model.zip")
    model.logger.close()

    summary = {
        "run_dir": str(run_dir),
        "env": config.env.id,
        "algo": config.algo.name,
        "device_resident": config.algo.device_resident,
        "fusion": config.extractor.fusion,
        "env_config": config.env.name,
        "tuned": untuned_note(config) is None,
        "seed": config.seed,
        "device": device,
        "total_timesteps": model.num_timesteps,
        "resumed_from": resumed_at,
        "steps_this_session": model.num_timesteps - start_steps,
        "wall_time_s": round(wall, 2),
        "fps": round((model.num_timesteps - start_steps) / wall, 1) if wall > 0 else None,
        "eval_episodes": config.eval_episodes,
        "final_return": final_return,
        "best_return": state["best"]["mean_return"],
        "best_step": state["best"]["step"],
    }
    for name in REFERENCES:
        summary[f"{name}_return"] = float(references[name].mean()) if name in references else None
    reference = next((name for name in reversed(REFERENCES[1:]) if name in references), None)
    summary["reference"] = reference
    summary["share_of_gap"] = gap_share(final_return, summary["random_return"], summary.get(f"{reference}_return"))
    final = state["evaluations"][-1]
    final_ci = summarize_spread(final["mean_return"], final["std_return"], config.eval_episodes)
    random_ci = summarize(references["random"])["ci95"]
    summary["final_ci95"] = final_ci
    summary["random_ci95"] = random_ci
    summary["better_than_random"] = final_ci[0] > random_ci[1]
    summary["requested_timesteps"] = config.total_timesteps
    atomic_write_json(run_dir / SUMMARY_FILE, summary)
    print_summary(summary)
    train_log.write(summary_text(summary))
    return summary


def _start(config: TrainConfig, run_dir: Path, device: str) -> tuple[Any, BatchedEnv, dict[str, np.ndarray], BaseAlgorithm, dict[str, Any], int | None]:
    """Everything before the first step: the envs, the references' returns and the model (new, or restored from
    the run's last good checkpoint with the trainer's state and the step it was taken at)."""
    try:
        env = make_train_env(config, device)
        eval_env = make_eval_env(config, device)
    except (ValueError, TypeError) as error:  # bad env options: one clear line, as for any other bad config
        raise ConfigError(f"env {config.env.id} with options {config.env.options}: {error}") from None
    references = reference_returns(eval_env, config.eval_seed)

    state: dict[str, Any] = {}
    resumed_at: int | None = None
    model: BaseAlgorithm | None = None
    resume = config.resume
    if resume is not None:
        skipped: list[tuple[Path, str]] = []
        restored = load_latest_checkpoint(run_dir / CHECKPOINT_DIR, lambda: build_model(config, env, device), skipped)
        if restored is None and not config.restart:
            found = "; ".join(f"{path.name}: {reason}" for path, reason in skipped) or "no checkpoint was written"
            raise ConfigError(
                f"resume={str(run_dir)!r}: no checkpoint loads ({found}); nothing was changed. To start this run over "
                "from step 0 in the same folder, add restart=true"
            )
        if restored is None:
            log.warning("no usable checkpoint in %s; starting the run over (restart=true)", run_dir / CHECKPOINT_DIR)
        else:
            model, resumed_at = restored.model, restored.checkpoint.steps
            state = restored.extra_state.get("trainer", {})
            restore_env(env, restored.extra_state.get("env"))
            buffer = getattr(model, "replay_buffer", None)
            log.info(
                "resuming %s from %s (step %d)%s", run_dir, restored.checkpoint.model, resumed_at,
                "" if buffer is None else f"; replay buffer: {buffer.size() * buffer.n_envs} transitions",
            )  # fmt: skip
    if model is None:
        model = build_model(config, env, device)

    return env, eval_env, references, model, state, resumed_at


def discard_unstarted_run(run_dir: Path) -> None:
    """Remove what a run that failed before its first step wrote (``config.yaml``), and its folder when nothing else
    (but Hydra's ``train.log``) is in it."""
    (run_dir / CONFIG_FILE).unlink(missing_ok=True)
    if run_dir.is_dir() and all(p.name == "train.log" and p.is_file() for p in run_dir.iterdir()):
        for p in run_dir.iterdir():
            p.unlink()
        run_dir.rmdir()


def restore_env(env: Any, saved: dict[str, torch.Tensor] | None) -> None:
    """Continue each training instance's random stream after the checkpoint's episodes instead of replaying them.

    Loading the model queued ``seed + i`` for the next reset; that reset happens here, then the episode
    counters are set back, so the reset SB3 does when learning starts begins each row's next fresh episode."""
    if saved is None:
        return
    env.reset()
    env.batched_env.episode.copy_(saved["episode"].to(env.batched_env.device))


def _gap(references: dict[str, np.ndarray]) -> tuple[float, float] | None:
    """Mean returns of ``random`` and of the strongest reference the env offers (see :data:`REFERENCES`)."""
    strongest = next((name for name in reversed(REFERENCES[1:]) if name in references), None)
    if "random" not in references or strongest is None:
        return None
    return float(references["random"].mean()), float(references[strongest].mean())


def hyperparameters(config: TrainConfig) -> dict[str, bool | str | float | int]:
    """The run's settings as TensorBoard's hparams want them: flat, scalar values (lists as text)."""
    flat: dict[str, bool | str | float | int] = {
        "env": config.env.id, "env_config": config.env.name, "algo": config.algo.name,
        "device_resident": config.algo.device_resident, "n_envs": config.n_envs, "seed": config.seed,
        "total_timesteps": config.total_timesteps,
    }  # fmt: skip
    for prefix, values in (("env", config.env.options), ("algo", config.algo.hyperparams),
                           ("extractor", dataclasses.asdict(config.extractor))):  # fmt: skip
        for key, value in values.items():
            if value is not None:
                flat[f"{prefix}.{key}"] = value if isinstance(value, (bool, str, int, float)) else str(value)
    return flat


#: the run's log: Hydra's log records, the progress lines and the end-of-run summary, as plain text
TRAIN_LOG = "train.log"


class TrainLog:
    """Appends plain-text lines to the run's ``train.log`` (beside the records Hydra's job logging writes there).

    :param path: the log file; opened for each write, so a killed run loses nothing written."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, text: str) -> None:
        """Append ``text`` (one or more lines)."""
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(text.rstrip("\n") + "\n")


def print_summary(summary: dict[str, Any]) -> None:
    """The end-of-run screen (also in ``summary.json``)."""
    from rich.console import Console

    Console().print(summary_table(summary))


def summary_text(summary: dict[str, Any]) -> str:
    """The end-of-run screen as plain text (no colours), for ``train.log``."""
    from rich.console import Console

    from rich import box

    console = Console(file=io.StringIO(), width=110, color_system=None, force_terminal=False, no_color=True)
    table = summary_table(summary)
    table.box = box.ASCII
    console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined]


def summary_table(summary: dict[str, Any]) -> Any:
    """The end-of-run table (a rich ``Table``)."""
    from rich.table import Table

    table = Table(title=f"mmrl.train: {summary['run_dir']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    steps = f"{summary['total_timesteps']:,}"
    requested = summary.get("requested_timesteps")
    if requested is not None and requested != summary["total_timesteps"]:
        steps += f" (total_timesteps={requested:,}, rounded up to whole rollouts)"
    if summary["resumed_from"] is not None:
        steps += f" (resumed from {summary['resumed_from']:,})"
    algo = summary["algo"] + (" (device-resident)" if summary["device_resident"] else "")
    table.add_row("run", f"{summary['env']}  {algo} + {summary['fusion']}  seed {summary['seed']}  on {summary['device']}")
    table.add_row("steps", steps)
    table.add_row("wall time", f"{summary['wall_time_s']:.1f} s  ({summary['fps'] or 0:,.0f} fps)")
    table.add_row(f"eval return ({summary['eval_episodes']} episodes)", f"final {summary['final_return']:.2f}   best {summary['best_return']:.2f} (step {summary['best_step']:,})")
    baseline = "   ".join(f"{name} {summary[f'{name}_return']:.2f}" for name in REFERENCES if summary.get(f"{name}_return") is not None)
    table.add_row("baselines", baseline)
    if summary.get("share_of_gap") is not None:
        verdict = f"{100 * summary['share_of_gap']:.0f}% of the way from random to {summary['reference']}"
        if not summary["better_than_random"]:
            verdict += "   [bold red]not better than random[/] (95% intervals overlap)"
        table.add_row("result", verdict)
    if summary.get("tuned") is False:
        table.add_row("settings", f"generic: {summary['algo']} has no settings tuned for env={summary.get('env_config')} (configs/tuned/)")
    table.add_row("files", "config.yaml  final_model.zip  best_model.zip  checkpoints/  progress.csv  tb/  evaluations.csv  summary.json  train.log")
    return table


# ----------------------------------------------------------------------------- the command line (Hydra)
def _run_dir(resume: str | None, run_dir: str) -> str:
    """Hydra's run folder: the resumed run's, else ``run_dir``, checked before Hydra creates it."""
    if resume == AUTO_RESUME:
        resume = None  # the run lives in run_dir, whether it is resumed or starts there
    path = resume if resume is not None else run_dir
    if resume is not None and not (Path(resume) / CONFIG_FILE).is_file():  # before Hydra creates the folder
        raise ValueError(f"resume={resume!r}: not a run directory ({CONFIG_FILE} is missing there)")
    if not str(path).strip():
        raise ValueError("run_dir is empty: name the folder of the run (default: runs/<env>-<algo>-<seed>-<time>)")
    check_run_dir_name(Path(path))
    return path


def schema_docs(schema: type) -> dict[str, str]:
    """The first sentence of each field's docstring in a schema dataclass of ``configs/schema.py`` (the string
    under the field), for ``--help``."""
    import ast

    docs: dict[str, str] = {}
    source = inspect.getsource(sys.modules[schema.__module__])
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == schema.__name__:
            for field, doc in zip(node.body, node.body[1:]):
                if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name) and isinstance(doc, ast.Expr) \
                        and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):  # fmt: skip
                    text = " ".join(doc.value.value.split()).replace("``", "")
                    docs[field.target.id] = text.split(". ")[0].rstrip(".")
    return docs


#: examples shown by ``--help``
HELP_EXAMPLES = (
    ("python -m mmrl.train", "PPO + FiLM on the easy Recommend, CPU, minutes"),
    ("python -m mmrl.train env=navigate", "an env brings the settings tuned for it (configs/tuned/<algo>/<env>.yaml)"),
    ("python -m mmrl.train env=diagnose extractor=concat seed=1 total_timesteps=300000", "groups and keys together"),
    ("python -m mmrl.train env.options.slate_size=6 algo.hyperparams.learning_rate=3e-4", "env options, hyper-parameters"),
    ("python -m mmrl.train resume=runs/<run-dir>", "continue a stopped run from its last checkpoint"),
    ("python -m mmrl.train --multirun seed=0,1,2 extractor=concat,film", "a sweep (runs/multirun/<date>/<time>/)"),
    ("python -m mmrl.train --cfg job", "print the composed config without running it"),
)


def help_text() -> str:
    """``python -m mmrl.train --help``: the config groups and their options, the main keys with their defaults and
    meanings (from the schema's docstrings), examples. Hydra fills it in as ``hydra.help.template``, hence ``$$``."""
    import yaml
    from importlib.resources import files

    defaults: dict[str, Any] = {}
    for entry in yaml.safe_load(files("mmrl.configs").joinpath("config.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            defaults.update(entry)
    meaning = {
        "env": "the task and its options (env.options.<option>); brings its extractor and tuned algorithm settings", "algo": "the SB3 algorithm and its settings (algo.hyperparams.<name>)",
        "extractor": "the fusion extractor (extractor.<key>)", "experiment": "a learning setup (= env=<name> with the budget of its claim)",
    }  # fmt: skip
    lines = ["mmrl-train (python -m mmrl.train): train an SB3 agent with mmrl's multimodal extractor on an mmrl env.", "",
             "Usage: python -m mmrl.train [group=option ...] [key=value ...] [--multirun] [--cfg job] [--hydra-help]", "",
             "Config groups (group=option; the default in brackets):"]  # fmt: skip
    for group in GROUPS:
        default = defaults.get(group)
        options = ", ".join(f"[{o}]" if o == default else o for o in group_options(group))
        lines.append(f"  {group + '=':<12}{options}")
        lines.append(f"  {'':<12}{meaning[group]}{'; none by default' if default is None else ''}")
    from importlib.resources import files

    tuned_folder = files("mmrl.configs").joinpath(TUNED_GROUP)
    lines += ["", "Tuned settings (configs/tuned/<algo>/<env>.yaml: hyper-parameters and budget that learn; others run generic):"]
    for algo in group_options("algo"):
        folder = tuned_folder.joinpath(algo)
        envs = sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml")) if folder.is_dir() else []
        lines.append(f"  {'algo=' + algo:<20}{', '.join(envs) if envs else 'none (generic settings only)'}")
    lines += ["", "Keys (key=value; default: meaning):"]
    docs = schema_docs(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        if field.name in docs:
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
            value = "null" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
            lines.append(f"  {field.name}={value}")
            lines += textwrap.wrap(docs[field.name], width=116, initial_indent=" " * 6, subsequent_indent=" " * 6)
    choices = "; ".join(f"{k}: {', '.join(v)}" for k, v in extractor_choices().items())
    lines += ["", "Nested keys:",
              "  env.options.<option>      the env's keyword arguments (slate_size, image_size, view ...; the env lists them on a typo)",
              "  algo.hyperparams.<name>   the algorithm constructor's arguments (learning_rate, n_steps, gamma ...)",
              "  algo.device_resident      true: PPO/DQN with their buffers on the env's device (FastPPO, FastDQN)",
              f"  extractor.<key>           {choices}; features_dim, modalities=[image] ...",
              "", "Examples:"]  # fmt: skip
    lines += [f"  {command:<82} # {note}" for command, note in HELP_EXAMPLES]
    lines += ["", "Every key with its meaning: configs/schema.py; README.md: Train from the command line. A misspelt key or option",
              "fails before anything is built, naming the valid ones. Hydra's own flags: --hydra-help."]  # fmt: skip
    return "\n".join(lines).replace("$", "$$") + "\n"


def _register_with_hydra() -> None:
    """The schemas in Hydra's ConfigStore and the ``mmrl_run_dir`` resolver of ``configs/config.yaml``."""
    from omegaconf import OmegaConf

    from mmrl.configs.schema import register_configs

    OmegaConf.register_new_resolver("mmrl_run_dir", _run_dir, replace=True)
    OmegaConf.register_new_resolver("mmrl_help", help_text, replace=True)
    OmegaConf.register_new_resolver("mmrl_job_dir", job_dir_name, replace=True)
    register_configs()


def check_keys(cfg: DictConfig) -> None:
    """Refuse keys added with ``+key=value`` that the schemas do not have (``env.options`` and the ``algo``
    dicts are open: the env and the algorithm check those).

    :raises ConfigError: naming the key and the valid ones."""
    nodes = ((cfg, TrainConfig), (cfg.env, EnvConfig), (cfg.algo, AlgoConfig), (cfg.extractor, ExtractorConfig))
    for node, schema in nodes:
        valid = [f.name for f in dataclasses.fields(schema)]
        unknown = [k for k in node if k not in valid]
        if unknown:
            raise ConfigError(f"Key {unknown[0]!r} not in {schema.__name__!r}; valid keys: {valid}")


def ignored_resume_overrides() -> list[str]:
    """Command-line overrides that a resumed run ignores (it uses its saved config)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        task = HydraConfig.get().overrides.task
    except ValueError:  # composed outside a Hydra app: no command line
        return []
    return [o for o in task if o.split("=", 1)[0].lstrip("+~") not in RESUME_OVERRIDABLE]


def to_train_config(cfg: DictConfig) -> TrainConfig:
    """The composed config as a :class:`TrainConfig`, interpolations resolved; with ``resume=``, the run's saved
    config with the :data:`RESUME_OVERRIDABLE` keys of ``cfg``.

    :raises ConfigError: for a key the schema does not have, or a resume folder that is not a run directory."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    check_keys(cfg)
    if cfg.resume == AUTO_RESUME:  # a requeued job: continue the run in run_dir if it was started, else start it
        cfg.resume = cfg.run_dir if (Path(cfg.run_dir) / CONFIG_FILE).is_file() else None
    if cfg.resume is not None:
        ignored = ignored_resume_overrides()
        try:
            saved = load_run_config(cfg.resume)
            merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), saved)
        except (RunDirError, OmegaConfBaseException) as error:
            raise ConfigError(f"resume={cfg.resume!r}: {error}") from error
        for key in RESUME_OVERRIDABLE:
            merged[key] = cfg[key]
        if ignored:
            log.warning("resume uses the run's saved config; ignoring %s", ignored)
        cfg = merged  # type: ignore[assignment]
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def saved_train_config(run_dir: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` saved in a run directory (``config.yaml``: plain YAML, no code), checked against the
    schema.

    :raises RunDirError: naming the folder and what is wrong."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    saved = load_run_config(run_dir)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), saved))  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        raise RunDirError(f"{Path(run_dir) / CONFIG_FILE}: not a training config ({str(error).splitlines()[0]})") from None


def compose_config(overrides: Sequence[str] = ()) -> TrainConfig:
    """The config ``python -m mmrl.train *overrides`` would run, composed with Hydra's compose API, e.g.
    ``compose_config(["experiment=navigate", "seed=1"])`` (tests and benchmarks train what the CLI trains).

    :raises ConfigError: for a key the schema does not have (Hydra's own errors for a bad group or value)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    _register_with_hydra()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="mmrl.configs", version_base=None):
        return to_train_config(compose(config_name="config", overrides=list(overrides)))


def _run(cfg: DictConfig) -> float:
    """The job Hydra runs: convert the config once, train; returns the final evaluation return (for sweepers)."""
    try:
        config = to_train_config(cfg)
        check_config(config)
        if resolve_device(config.device) == "cpu":
            # The env allocates fresh observation buffers every step; keeping freed pages in the process (instead
            # of handing them back to the OS) spares a page fault per page touched again.
            retain_freed_memory()
        return float(train(config)["final_return"])
    except ConfigError as error:
        print(f"mmrl.train: bad config: {error}", file=sys.stderr)
        _remove_unused_run_folder()
        sys.exit(2)


def _remove_unused_run_folder() -> None:
    """After a failed start, remove the folder Hydra made for the run if the run never wrote into it (nothing but
    Hydra's ``train.log``), so that a typo leaves no junk folder under ``runs/``."""
    from hydra.core.hydra_config import HydraConfig

    try:
        folder = Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not under Hydra (tests calling _run directly)
        return
    if folder.is_dir() and all(p.name == "train.log" for p in folder.iterdir()):
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def check_run_folder_arguments(argv: Sequence[str]) -> None:
    """The checks of ``resume=`` and ``run_dir=`` that must come before Hydra creates the run folder (a typo in
    ``resume=`` would otherwise leave an empty folder behind), on the command line's own words.

    :raises ConfigError: naming the bad value."""
    for argument in argv:
        key, _, value = argument.partition("=")
        key = key.lstrip("+~")
        if key not in ("resume", "run_dir") or "${" in value or (key == "resume" and value == AUTO_RESUME):
            continue
        try:
            _run_dir(value if key == "resume" and value not in ("", "null") else None, value if key == "run_dir" else "runs")
        except ValueError as error:
            raise ConfigError(str(error)) from None


#: a sweep job's run folder unless ``run_dir=`` is given: Hydra's folder of the job,
#: ``runs/multirun/<date>/<time>/<job number>-<its overrides>``, where Hydra's log of the job goes too
MULTIRUN_RUN_DIR = "run_dir=${hydra:runtime.output_dir}"
#: the longest part of a sweep job's folder name taken by its overrides (file systems take 255 bytes)
JOB_NAME_MAX = 160


def fixed_keys(overrides: Sequence[str]) -> list[str]:
    """The keys a sweep's jobs share (not swept), with ``run_dir``, ``resume`` and ``progress``: what a job's folder
    name leaves out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = ["run_dir", "resume", "progress"]
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if not override.is_sweep_override() and not override.key_or_group.startswith("hydra") and override.key_or_group not in keys:
            keys.append(override.key_or_group)
    return keys


def job_dir_name(number: Any, overrides: Any) -> str:
    """A sweep job's folder name: its number, then its overrides (``hydra.job.override_dirname``), cut to
    :data:`JOB_NAME_MAX` characters and without ``/`` (the full overrides are in the run's ``config.yaml``)."""
    name = str(overrides or "").replace("/", "_")
    return f"{number}-{name[:JOB_NAME_MAX]}" if name else str(number)


#: config groups of the command line (``configs/<group>/*.yaml``), in the order ``--help`` lists them
GROUPS = ("env", "algo", "extractor", "experiment")
#: schema of each config node a dotted key can reach
NODE_SCHEMAS: dict[str, type] = {"": TrainConfig, "env": EnvConfig, "algo": AlgoConfig, "extractor": ExtractorConfig}
#: dicts whose keys the env or the algorithm checks (a key the YAML does not list is added without Hydra's ``+``)
OPEN_KEYS = ("env.options", "algo.hyperparams", "algo.policy_kwargs")
#: a sweep is checked value by value up to this many composed configs (each takes about 0.1 s)
MAX_CHECKED_CONFIGS = 32


def group_options(group: str) -> list[str]:
    """The options of config group ``group`` (the YAML files of ``configs/<group>/``)."""
    from importlib.resources import files

    folder = files("mmrl.configs").joinpath(group)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def check_override(override: Any) -> None:
    """One parsed command-line override (Hydra's ``Override``) against the schemas: a known key, a group option
    that exists, a valid extractor choice. ``hydra...`` keys and the open dicts of :data:`OPEN_KEYS` are left to
    Hydra, the algorithm and the env.

    :raises ConfigError: naming the bad key or value, the valid ones and the closest one."""
    key = override.key_or_group
    if key.startswith("hydra") or "/" in key or override.package is not None:
        return
    if _sweeps(override):
        values = [str(v) for v in override.sweep_string_iterator()]
    else:  # a deletion has no value; an interval sweep's values are drawn by its sweeper
        values = [] if override.is_delete() or override.is_sweep_override() else [override.get_value_element_as_str()]
    if key in GROUPS:
        options = group_options(key) + (["null"] if key == "experiment" else [])
        for value in values:
            if value not in options:
                raise ConfigError(f"{key}={value}: Could not find '{key}/{value}'{did_you_mean(value, options)}; options of {key}: {', '.join(options)}")
        return
    parts = key.split(".")
    node = ""
    for i, part in enumerate(parts):
        valid = [f.name for f in dataclasses.fields(NODE_SCHEMAS[node])]
        if node == "":
            valid += [g for g in GROUPS if g not in valid]
        if part not in valid or (part == "experiment" and node == ""):
            where = f" of {node}" if node else ""
            raise ConfigError(f"unknown key {key!r}{did_you_mean(part, valid)}; valid keys{where}: {', '.join(valid)}")
        path = f"{node}.{part}" if node else part
        if path in OPEN_KEYS:
            return
        if path not in NODE_SCHEMAS:
            if i < len(parts) - 1:
                raise ConfigError(f"unknown key {key!r}: {path} is a value, not a group of keys")
            break
        node = path
    if node == "extractor" and parts[-1] in (choices := extractor_choices()):
        for value in values:
            if value not in choices[parts[-1]]:
                raise ConfigError(f"{key}={value}: not one of {', '.join(choices[parts[-1]])}{did_you_mean(value, choices[parts[-1]])}")


def _compose_for_check(overrides: Sequence[str]) -> Any:
    """The config ``overrides`` compose to (an OmegaConf node, unresolved), by Hydra's compose API: no folder,
    no log, no job."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="mmrl.configs", version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides))
    GlobalHydra.instance().clear()
    return cfg


def check_command_line(overrides: Sequence[str], full: bool = True) -> list[str]:
    """Check the command line's overrides before Hydra makes any folder; return them as Hydra should get them.

    Keys and group options are checked against the schemas and ``configs/``; with ``full``, each config the command
    line makes (for a sweep, each swept value with the others' first ones) is composed and checked by
    :func:`check_config` (ranges, choices, the algorithm's hyper-parameters, the env's options). A key of
    :data:`OPEN_KEYS` that the composed config does not have yet is handed on as ``+key=value``: the env or the
    algorithm says whether it exists, with the valid names and a did-you-mean.

    :raises ConfigError: one line naming the bad key or value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return list(overrides)  # Hydra reports its own syntax errors
    for override in parsed:
        check_override(override)
    if any(o.is_sweep_override() and not _sweeps(o) for o in parsed):
        return list(overrides)  # an interval sweep (Optuna, Ax ...) has no values to compose: its sweeper checks them
    open_keys = [o for o in parsed if o.key_or_group.startswith(tuple(f"{k}." for k in OPEN_KEYS)) and not o.is_delete()]
    app = [o for o in parsed if not o.key_or_group.startswith("hydra")]  # Hydra's own settings: Hydra checks them
    try:
        base = _compose_for_check(_first_values([o for o in app if o not in open_keys]))
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_first_lines(error)) from None
    handed: list[str] = []
    for override in parsed:
        line = override.input_line
        if override in open_keys:
            present = OmegaConf.select(base, override.key_or_group, default=None) is not None
            line = (override.key_or_group if present else "+" + override.key_or_group) + line[line.index("="):]
            if override.package is not None:
                line = line.replace(override.key_or_group, f"{override.key_or_group}@{override.package}", 1)
        handed.append(line)
    if not full:
        return handed
    handed_parsed = [o for o in OverridesParser.create().parse_overrides(handed) if not o.key_or_group.startswith("hydra")]
    variants = [_first_values(handed_parsed)]
    for i, override in enumerate(handed_parsed):
        if _sweeps(override):
            for value in list(override.sweep_string_iterator())[1:]:
                variants.append([*variants[0][:i], f"{override.get_key_element()}={value}", *variants[0][i + 1 :]])
    for variant in variants[:MAX_CHECKED_CONFIGS]:
        try:
            cfg = _compose_for_check(variant)
            if "${hydra:" in str(OmegaConf.to_container(cfg, resolve=False).get("run_dir")):
                cfg.run_dir = "runs/checked"  # resolved in Hydra's job; its name is checked there
            check_config(to_train_config(cfg))
        except (HydraException, OmegaConfBaseException) as error:
            raise ConfigError(_first_lines(error)) from None
    return handed


def _sweeps(override: Any) -> bool:
    """Whether ``override`` sweeps over values that can be listed (an interval sweep's cannot)."""
    return bool(override.is_sweep_override()) and override.value_type.name != "INTERVAL_SWEEP"


def _first_values(parsed: Sequence[Any]) -> list[str]:
    """The overrides as one config: each sweep at its first value."""
    return [f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if _sweeps(o) else o.input_line for o in parsed]


def _first_lines(error: Exception) -> str:
    """Hydra's or OmegaConf's message without its stack-trace hint, as one line."""
    text = str(error).split("\nConfig search path")[0].split("\n\nSet the environment variable HYDRA_FULL_ERROR")[0]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and not line.strip().startswith(("full_key:", "object_type=", "reference_type="))]
    if error.__cause__ is not None and str(error.__cause__).splitlines():
        lines.append(str(error.__cause__).splitlines()[0])
    return "; ".join(dict.fromkeys(lines))


def main() -> None:
    """``python -m mmrl.train [key=value ...]``: Hydra parses the command line (``--multirun``, ``--cfg`` ...).

    The overrides are checked first (:func:`check_run_folder_arguments`, :func:`check_command_line`), so a typo
    fails with one line and exit code 2 before Hydra creates the run folder."""
    import hydra
    from hydra._internal.utils import get_args_parser

    _register_with_hydra()
    args, _ = get_args_parser().parse_known_args(sys.argv[1:])
    if not (args.shell_completion or args.hydra_help or args.info):
        try:
            check_run_folder_arguments(args.overrides)
            # --help and --cfg compose the config without running it: the keys are checked, the values need not be
            handed = check_command_line(args.overrides, full=not (args.help or args.cfg))
        except ConfigError as error:
            print(f"mmrl.train: bad config: {error}", file=sys.stderr)
            sys.exit(2)
        rewritten = iter(handed)
        positions = [i for i, a in enumerate(sys.argv) if i > 0 and a in args.overrides]
        argv = list(sys.argv)
        for i in positions[: len(handed)]:
            argv[i] = next(rewritten)
        if args.multirun and not any(a.lstrip("+").startswith("run_dir=") for a in args.overrides):
            # each job of a sweep lives in its own folder of the sweep (configs/config.yaml), named by the values it
            # sweeps: the overrides every job shares are left out of its name (they are in its config.yaml)
            argv += [MULTIRUN_RUN_DIR, f"hydra.job.config.override_dirname.exclude_keys=[{','.join(fixed_keys(handed))}]"]
        sys.argv = argv
    hydra.main(config_path="pkg://mmrl.configs", config_name="config", version_base=None)(_run)()


if __name__ == "__main__":
    main()
