"""``python -m mmrl.train``: train an SB3 agent with :class:`mmrl.MultimodalExtractor` on an mmrl env, from a Hydra config.

Usage::

    python -m mmrl.train                                   # PPO + FiLM extractor on Recommend, CPU, minutes
    python -m mmrl.train algo=dqn extractor=concat n_envs=64 seed=3 total_timesteps=300000
    python -m mmrl.train env.options.slate_size=6 extractor.features_dim=256 algo.hyperparams.learning_rate=1e-3
    python -m mmrl.train resume=runs/<run-dir>              # continue a killed run from its last good checkpoint
    python -m mmrl.train --multirun seed=0,1 extractor=concat,film
    python -m mmrl.train --cfg job                         # print the composed config and exit

The run directory (``run_dir``) gets ``config.yaml`` (the resolved config), ``checkpoints/`` (written atomically,
the last ``keep_checkpoints`` kept), ``progress.csv`` and ``tb/`` (TensorBoard), ``evaluations.csv``,
``best_model.zip``, ``final_model.zip`` and ``summary.json``; Hydra's log goes to ``train.log``.

This module is the only place where the config becomes constructor arguments, and the only library module
that imports Hydra.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import CSVOutputFormat, KVWriter, Logger, TensorBoardOutputFormat

import mmrl
from mmrl.configs.schema import AlgoConfig, EnvConfig, ExtractorConfig, TrainConfig, register_configs
from mmrl.agents import builders
from mmrl.agents.reference import RandomPolicy, make_reference_policy
from mmrl.checkpoints import CHECKPOINT_DIR, load_latest_checkpoint, save_checkpoint, save_model
from mmrl.core.batched_env import BatchedEnv, Info, Observation
from mmrl.episodes import run_episodes

log = logging.getLogger("mmrl.train")

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
#: command-line keys that still apply when resuming (the rest comes from the run's saved config)
RESUME_OVERRIDABLE = ("resume", "progress", "threads")


# ----------------------------------------------------------------------------- config -> arguments
def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without CUDA is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda'; got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available; use device=cpu or auto")
    return device


def container(node: Any) -> Any:
    """A config node as plain Python containers (lists, dicts), interpolations resolved."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def extractor_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """Keyword arguments of :class:`mmrl.MultimodalExtractor` from ``cfg.extractor`` (``None`` means its default)."""
    kwargs = {k: v for k, v in container(cfg.extractor).items() if v is not None}
    for key in ("modalities", "image_channels", "extra_keys"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    return kwargs


class ConfigError(ValueError):
    """A config that cannot run; reported as one line, without a traceback."""


def check_config(cfg: DictConfig) -> None:
    """Checks done before anything is built: keys added with ``+key=`` against the schema, ranges, names.

    :raises ConfigError: naming the bad key or value (and the valid choices where there is a list)."""
    try:
        _check_config(cfg)
    except (ValueError, ImportError, KeyError) as error:
        raise ConfigError(str(error)) from error


def _check_config(cfg: DictConfig) -> None:
    # Hydra lets +key=... add keys a schema does not have; refuse them (env.options and algo.* dicts are open).
    for node, schema in ((cfg, TrainConfig), (cfg.env, EnvConfig), (cfg.algo, AlgoConfig), (cfg.extractor, ExtractorConfig)):
        valid = [f.name for f in dataclasses.fields(schema)]
        unknown = [k for k in node if k not in valid]
        if unknown:
            raise ValueError(f"Key {unknown[0]!r} not in {schema.__name__!r}; valid keys: {valid}")
    positive = ("n_envs", "total_timesteps", "threads", "eval_episodes", "keep_checkpoints", "log_interval")
    bad = [f"{k}={cfg[k]}" for k in positive if cfg[k] < 1]
    bad += [f"{k}={cfg[k]}" for k in ("checkpoint_every", "eval_every") if cfg[k] < 0]
    if bad:
        raise ValueError(f"these must be positive (checkpoint_every, eval_every: >= 0): {', '.join(bad)}")
    if cfg.env.id not in mmrl.ENV_CLASSES:
        raise ValueError(f"unknown env id {cfg.env.id!r}; registered: {sorted(mmrl.ENV_CLASSES)}")
    builders.check_algo_kwargs(cfg.algo.name, container(cfg.algo.hyperparams))
    resolve_device(cfg.device)


def make_train_env(cfg: DictConfig, device: str) -> Any:
    """The SB3 VecEnv of ``n_envs`` instances (instance ``i`` seeded ``seed + i`` at the first reset)."""
    return mmrl.make_vec(
        cfg.env.id,
        num_envs=cfg.n_envs,
        device=device,
        seed=cfg.seed,
        as_tensors=cfg.algo.name in builders.TENSOR_ENV_ALGORITHMS,
        compile=bool(cfg.env.get("compile", False)),
        **container(cfg.env.options),
    )


def make_eval_env(cfg: DictConfig, device: str) -> BatchedEnv:
    """One batched env of ``eval_episodes`` instances: an evaluation is one episode in each."""
    return mmrl.make_batched(cfg.env.id, num_envs=cfg.eval_episodes, device=device, **container(cfg.env.options))


# ----------------------------------------------------------------------------- evaluation
class ModelActor:
    """``act``/``update`` for :func:`~mmrl.episodes.run_episodes` from an SB3 model (greedy actions).

    Recurrent policies get their hidden state carried between steps and reset where an episode ends."""

    def __init__(self, model: BaseAlgorithm, num_envs: int):
        self.model = model
        self.state: Any = None
        self.episode_start = np.ones(num_envs, dtype=bool)

    def act(self, obs: Observation, info: Info) -> torch.Tensor:
        host = {k: v.cpu().numpy() for k, v in obs.items()}
        actions, self.state = self.model.predict(host, state=self.state, episode_start=self.episode_start, deterministic=True)
        self.episode_start[:] = False
        return torch.as_tensor(actions, dtype=torch.int64)

    def update(self, info: Info, done: torch.Tensor) -> None:
        self.episode_start = done.cpu().numpy().copy()


def evaluate(model: BaseAlgorithm, env: BatchedEnv, seed: int) -> tuple[float, float]:
    """Mean and standard deviation of the return of one greedy episode per instance of ``env``."""
    actor = ModelActor(model, env.num_envs)
    stats = run_episodes(env, actor.act, seed=seed, update=actor.update)
    return stats.mean_return, float(stats.returns.std())


def reference_returns(env: BatchedEnv, seed: int) -> dict[str, float]:
    """Mean returns of the random policy (and the oracle where the env supports it) on the evaluation episodes."""
    random_policy = RandomPolicy(env, seed)
    out = {"random": run_episodes(env, random_policy.act, seed=seed).mean_return}
    try:
        oracle = make_reference_policy("oracle", env)
        out["oracle"] = run_episodes(env, oracle.act, seed=seed, update=oracle.update).mean_return
    except KeyError:
        pass
    return out


# ----------------------------------------------------------------------------- callbacks and logging
class RunCallback(BaseCallback):
    """Evaluates every ``eval_every`` steps (keeping ``best_model.zip``) and checkpoints every ``checkpoint_every``.

    Both happen at the start of a rollout, when the steps collected so far have all been trained on, so a
    checkpoint is a consistent point to resume from."""

    def __init__(self, cfg: DictConfig, run_dir: Path, eval_env: BatchedEnv, state: dict[str, Any]):
        super().__init__()
        self.cfg = cfg
        self.run_dir = run_dir
        self.eval_env = eval_env
        self.state = state  # best, evaluations, wall_time: checkpointed with the model

    def _next(self, every: int, last: int) -> int:
        return math.inf if every <= 0 else (last // every + 1) * every  # type: ignore[return-value]

    def _on_training_start(self) -> None:
        self.next_eval = self._next(self.cfg.eval_every, self.state.get("last_eval_step", 0))
        self.next_checkpoint = self._next(self.cfg.checkpoint_every, self.num_timesteps)

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self.next_eval:
            self.evaluate()
            self.next_eval = self._next(self.cfg.eval_every, self.num_timesteps)
        if self.num_timesteps >= self.next_checkpoint:
            self.checkpoint()
            self.next_checkpoint = self._next(self.cfg.checkpoint_every, self.num_timesteps)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        # A compiled env leaves ~1e6 long-lived compiler objects behind; full GC passes over them stall steps
        # for 10+ ms. Once the first rollout has compiled everything, move them out of the collector's way.
        if self.cfg.env.get("compile", False) and not getattr(self, "gc_frozen", False):
            gc.collect()
            gc.freeze()
            self.gc_frozen = True

    def evaluate(self) -> float:
        """Evaluate the current policy, log it, keep it as ``best_model.zip`` if it is the best so far."""
        mean, std = evaluate(self.model, self.eval_env, self.cfg.eval_seed)
        step = self.num_timesteps
        self.state["last_eval_step"] = step
        self.state.setdefault("evaluations", []).append({"step": step, "mean_return": mean, "std_return": std})
        with open(self.run_dir / "evaluations.csv", "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=["step", "mean_return", "std_return"])
            writer.writeheader()
            writer.writerows(self.state["evaluations"])
        best = self.state.get("best")
        if best is None or mean > best["mean_return"]:
            save_model(self.model, self.run_dir / "best_model.zip")
            self.state["best"] = {"step": step, "mean_return": mean}
        self.logger.record("eval/mean_return", mean)
        self.logger.record("eval/std_return", std)
        self.logger.record("eval/best_return", self.state["best"]["mean_return"])
        return mean

    def checkpoint(self) -> None:
        batched = self.training_env.batched_env  # type: ignore[attr-defined]
        extra = {
            "trainer": dict(self.state),
            "env": {"seeds": batched.seeds.cpu().clone(), "episode": batched.episode.cpu().clone()},
        }
        save_checkpoint(self.model, self.run_dir / CHECKPOINT_DIR, extra, keep=self.cfg.keep_checkpoints)


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
        self.start_steps, self.start_time = self.num_timesteps, time.perf_counter()
        self.progress.start()
        self.task = self.progress.add_task("train", total=self.total, completed=self.num_timesteps, fps="-", ret="-")

    def _on_step(self) -> bool:
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


class OneLineOutput(KVWriter):
    """One short line per log interval: steps, fps, recent return, evaluation, losses."""

    KEYS = (
        ("time/total_timesteps", "step", "{:,.0f}"), ("time/fps", "fps", "{:,.0f}"),
        ("rollout/ep_rew_mean", "return", "{:.2f}"), ("rollout/ep_len_mean", "len", "{:.1f}"),
        ("eval/mean_return", "eval", "{:.2f}"), ("train/loss", "loss", "{:.3g}"),
        ("train/entropy_loss", "entropy", "{:.3g}"), ("rollout/exploration_rate", "eps", "{:.2f}"),
    )  # fmt: skip

    def __init__(self, print_fn: Callable[[str], None] = print):
        self.print_fn = print_fn

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        parts = [f"{name} {fmt.format(key_values[key])}" for key, name, fmt in self.KEYS if key in key_values]
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


# ----------------------------------------------------------------------------- run directory
#: the longest folder name most file systems take (bytes)
NAME_MAX = 255


def check_run_dir_name(path: Path) -> None:
    """Fail, naming the remedy, when a folder name of ``path`` is longer than file systems take."""
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > NAME_MAX - 8:  # room for unique_dir's "-<n>" suffix
            raise ValueError(
                f"run_dir={str(path)!r}: the folder name {part[:60]!r}... is {size} bytes; file systems take at most "
                f"{NAME_MAX}. With run_dir=...${{hydra:job.override_dirname}}, put the fixed settings in an experiment= "
                "config (configs/experiment/) instead of on the command line, or name the runs by the swept keys "
                "(run_dir=sweep/${extractor.fusion}-${seed})"
            )


def unique_dir(path: Path) -> Path:
    """``path``, or ``path-1``, ``path-2`` ... if a run already lives there (multirun jobs started in the same second)."""
    check_run_dir_name(path)
    candidate, n = path, 0
    while (candidate / CONFIG_FILE).exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def load_run_config(run_dir: Path, overrides: DictConfig) -> DictConfig:
    """The saved config of ``run_dir``, checked against the schema, with the overridable keys of ``overrides``."""
    path = run_dir / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"resume={str(run_dir)!r}: no {CONFIG_FILE} there; is it a run directory?")
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.load(path))
    for key in RESUME_OVERRIDABLE:
        cfg[key] = overrides[key]
    return cfg  # type: ignore[return-value]


def ignored_resume_overrides() -> list[str]:
    """Command-line overrides that a resumed run ignores (it uses its saved config)."""
    try:
        task = HydraConfig.get().overrides.task
    except ValueError:
        return []
    return [o for o in task if o.split("=", 1)[0].lstrip("+~") not in RESUME_OVERRIDABLE]


# ----------------------------------------------------------------------------- the run
def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg``; return the summary (also saved as ``summary.json``)."""
    resume = cfg.resume
    if resume is not None:
        ignored = ignored_resume_overrides()
        cfg = load_run_config(Path(resume), cfg)
        if ignored:
            log.warning("resume uses the run's saved config; ignoring %s", ignored)
        run_dir = Path(resume)
    else:
        run_dir = unique_dir(Path(cfg.run_dir))
        cfg.run_dir = str(run_dir)
    check_config(cfg)
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        (run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(resolved))

    env = make_train_env(cfg, device)
    eval_env = make_eval_env(cfg, device)
    references = reference_returns(eval_env, cfg.eval_seed)

    state: dict[str, Any] = {}
    resumed_at: int | None = None
    model: BaseAlgorithm | None = None
    if resume is not None:
        restored = load_latest_checkpoint(
            run_dir / CHECKPOINT_DIR, lambda path: builders.load_algorithm(cfg.algo.name, path, env, device)
        )
        if restored is None:
            log.warning("no usable checkpoint in %s; starting the run over", run_dir / CHECKPOINT_DIR)
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
        model = builders.build_algorithm(
            cfg.algo.name, env, extractor_kwargs(cfg), container(cfg.algo.hyperparams), cfg.seed, device,
            policy_kwargs=container(cfg.algo.policy_kwargs),
        )  # fmt: skip

    progress = ProgressCallback(cfg.total_timesteps) if cfg.progress else None
    print_fn = progress.progress.console.print if progress else print
    model.set_logger(make_logger(run_dir, resumed_at, print_fn))
    run_callback = RunCallback(cfg, run_dir, eval_env, state)
    callbacks: list[BaseCallback] = [run_callback] + ([progress] if progress else [])

    start_steps, start = model.num_timesteps, time.perf_counter()
    remaining = cfg.total_timesteps - model.num_timesteps
    if remaining > 0:
        model.learn(
            remaining, callback=CallbackList(callbacks), log_interval=cfg.log_interval,
            reset_num_timesteps=resumed_at is None, progress_bar=False,
        )  # fmt: skip
    wall = time.perf_counter() - start

    run_callback.init_callback(model)
    if state.get("last_eval_step") == model.num_timesteps:  # e.g. resuming a run that had already finished
        final_return = state["evaluations"][-1]["mean_return"]
    else:
        final_return = run_callback.evaluate()
    model.logger.record("time/total_timesteps", model.num_timesteps)
    model.logger.dump(model.num_timesteps)
    run_callback.checkpoint()
    save_model(model, run_dir / "final_model.zip")
    model.logger.close()

    summary = {
        "run_dir": str(run_dir),
        "env": cfg.env.id,
        "algo": cfg.algo.name,
        "fusion": cfg.extractor.fusion,
        "seed": cfg.seed,
        "device": device,
        "total_timesteps": model.num_timesteps,
        "resumed_from": resumed_at,
        "steps_this_session": model.num_timesteps - start_steps,
        "wall_time_s": round(wall, 2),
        "fps": round((model.num_timesteps - start_steps) / wall, 1) if wall > 0 else None,
        "eval_episodes": cfg.eval_episodes,
        "final_return": final_return,
        "best_return": state["best"]["mean_return"],
        "best_step": state["best"]["step"],
        "random_return": references["random"],
        "oracle_return": references.get("oracle"),
    }
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary)
    return summary


def restore_env(env: Any, saved: dict[str, torch.Tensor] | None) -> None:
    """Continue each training instance's random stream after the checkpoint's episodes instead of replaying them.

    Loading the model queued ``seed + i`` for the next reset; that reset happens here, then the episode
    counters are set back, so the reset SB3 does when learning starts begins each row's next fresh episode."""
    if saved is None:
        return
    env.reset()
    env.batched_env.episode.copy_(saved["episode"].to(env.batched_env.device))


def print_summary(summary: dict[str, Any]) -> None:
    """The end-of-run screen (also in ``summary.json``)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mmrl.train: {summary['run_dir']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    steps = f"{summary['total_timesteps']:,}"
    if summary["resumed_from"] is not None:
        steps += f" (resumed from {summary['resumed_from']:,})"
    table.add_row("run", f"{summary['env']}  {summary['algo']} + {summary['fusion']}  seed {summary['seed']}  on {summary['device']}")
    table.add_row("steps", steps)
    table.add_row("wall time", f"{summary['wall_time_s']:.1f} s  ({summary['fps'] or 0:,.0f} fps)")
    table.add_row(f"eval return ({summary['eval_episodes']} episodes)", f"final {summary['final_return']:.2f}   best {summary['best_return']:.2f} (step {summary['best_step']:,})")
    baseline = f"random {summary['random_return']:.2f}"
    if summary["oracle_return"] is not None:
        baseline += f"   oracle {summary['oracle_return']:.2f}"
    table.add_row("baselines", baseline)
    table.add_row("files", "config.yaml  final_model.zip  best_model.zip  checkpoints/  progress.csv  tb/  evaluations.csv  summary.json")
    Console().print(table)


def _run_dir(resume: str | None, run_dir: str) -> str:
    """Hydra's run folder: the resumed run's, else ``run_dir``, checked before Hydra creates it."""
    path = resume if resume is not None else run_dir
    check_run_dir_name(Path(path))
    return path


OmegaConf.register_new_resolver("mmrl_run_dir", _run_dir, replace=True)
register_configs()


@hydra.main(config_path="pkg://mmrl.configs", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the final evaluation return (for sweepers that optimise it)."""
    try:
        return float(train(cfg)["final_return"])
    except ConfigError as error:
        print(f"mmrl.train: bad config: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
