"""Typed schemas of the training config tree (``configs/``), one dataclass per config group.

Every YAML file of the tree starts with ``defaults: [<schema>, _self_]``, so Hydra merges it onto its
schema and a misspelt key or a value of the wrong type fails when the config is composed, before any
work starts. :func:`register_configs` puts the schemas in Hydra's ``ConfigStore``; this module itself
does not import Hydra (only the entry point does, through that function).

The group schemas live in a group of their own (``schema/env``, ``schema/algo``, ``schema/extractor``; a
YAML file of group ``env`` starts with ``defaults: [/schema/env@_here_, _self_]``) so they do not show up
among the choices of ``env=``, ``algo=`` and ``extractor=``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class EnvConfig:
    """An environment: a registered id and its options (keyword arguments of the env)."""

    name: str = MISSING
    """Short name, used in run directory names."""
    id: str = MISSING
    """Gymnasium id registered by ``import mmrl`` (e.g. ``mmrl/Recommend-v0``)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Env keyword arguments (``slate_size``, ``image_size``, ``reward`` ...); add new ones with ``+env.options.x=``."""
    compile: bool = False
    """Fuse the training env's step and reset with ``torch.compile`` (``mmrl.make_vec(compile=True)``): faster
    steps for hundreds of instances, after 30-60 s of compilation."""


@dataclass
class AlgoConfig:
    """A Stable-Baselines3 (or sb3-contrib) algorithm and its constructor arguments."""

    name: str = MISSING
    """``ppo``, ``a2c``, ``dqn`` or ``recurrent_ppo`` (see :data:`mmrl.agents.builders.ALGORITHMS`)."""
    hyperparams: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the algorithm's constructor (``n_steps``, ``learning_rate`` ...); checked against
    its signature before anything is built."""
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra ``policy_kwargs`` (``net_arch``, ``activation_fn`` ...); the features extractor is set from ``extractor``."""
    device_resident: bool = False
    """Train mmrl's device-resident variant (``ppo``: FastPPO, ``dqn``: FastDQN, :mod:`mmrl.agents.fast`): its
    rollout or replay buffer lives on the policy's device and is filled from the env's tensors. Same losses,
    same ``save()`` format; other algorithms have no such variant."""


@dataclass
class ExtractorConfig:
    """Keyword arguments of :class:`mmrl.MultimodalExtractor` (see its docstring for each one)."""

    image_encoder: str = "cnn"
    text_encoder: str = "gru"
    fusion: str = MISSING
    features_dim: int = 256
    modalities: list[str] = field(default_factory=lambda: ["image", "text"])
    image_channels: list[int] | None = None
    text_dim: int = 64
    text_layers: int | None = None
    text_heads: int = 4
    pretrained_path: str | None = None
    freeze_pretrained: bool = True
    cache_embeddings: bool = True
    max_unknown_share: float = 0.2
    pretrained_image_path: str | None = None
    freeze_pretrained_image: bool = True
    image_cache_size: int = 4096
    pretrained_image_grid: int = 4
    fusion_dim: int = 128
    film_blocks: int = 2
    attention_heads: int = 4
    extra_keys: list[str] | None = None


@dataclass
class TrainConfig:
    """``python -m mmrl.train``: one training run (or, with ``resume``, the rest of one)."""

    env: EnvConfig = MISSING
    algo: AlgoConfig = MISSING
    extractor: ExtractorConfig = MISSING
    seed: int = 0
    """Seeds the model, the training envs (instance ``i`` gets ``seed + i``) and the global RNGs."""
    n_envs: int = 32
    """Training env instances, simulated as one batch."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``; used by the model and the env simulator."""
    total_timesteps: int = 150_000
    """Env steps (summed over instances) at which the run ends; a resumed run ends there too. The default is a
    budget a CPU gets through in minutes, in which the default recipe learns most of the easy Recommend task
    (an ``experiment=`` config sets the budget of its learning claim)."""
    threads: int = 1
    """``torch.set_num_threads``; 1 is fastest for small networks on few cores."""
    run_dir: str = "runs/${env.name}-${algo.name}-${seed}-${now:%Y%m%d-%H%M%S}"
    """Where everything of the run goes (Hydra's own output folder is not used)."""
    checkpoint_every: int = 20_000
    """Env steps between checkpoints (taken at the next rollout boundary); 0 disables them."""
    keep_checkpoints: int = 3
    """How many of the latest checkpoints to keep."""
    eval_every: int = 25_000
    """Env steps between evaluations (0: only the final one)."""
    eval_episodes: int = 256
    """Episodes per evaluation, run as one batch of that many instances."""
    eval_seed: int = 1_000_000
    """Episode ``i`` of every evaluation is seeded ``eval_seed + i`` (apart from training seeds)."""
    resume: str | None = None
    """A run directory to continue from its last good checkpoint, with its own saved config; ``auto``: continue the
    run in ``run_dir`` if one was started there, else start it there (for jobs a scheduler requeues; give a
    ``run_dir`` without the time in it)."""
    restart: bool = False
    """With ``resume``: start the run over from step 0 when none of its checkpoints loads (by default resuming then
    fails, naming what it found, and changes nothing)."""
    progress: bool = True
    """Show a progress bar (fps, recent return) while training."""
    log_interval: int = 1
    """Logger writes every this many rollouts (on-policy) or episodes (off-policy, SB3's convention)."""


def register_configs() -> None:
    """Register the schemas in Hydra's ``ConfigStore`` (called by the entry point before composing)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(group="schema", name="env", node=EnvConfig)
    store.store(group="schema", name="algo", node=AlgoConfig)
    store.store(group="schema", name="extractor", node=ExtractorConfig)
