"""The batched environment engine: one simulator over torch tensors, many instances per process.

A concrete env subclasses :class:`BatchedEnv` and writes three pure pieces of logic over batch-first
tensors: ``_initial_state`` (fresh episodes for some rows), ``_transition`` (one step for all rows)
and ``_observe`` (state to observation). Its state is a dataclass of tensors that subclasses
:class:`EnvState`, so time lives in the state (``elapsed``), where the transition reads it; the engine
advances it. The base owns everything else, written once:

* per-instance counter-based randomness (:mod:`mmrl.core.rng`): row ``i`` of a batch seeded ``s``
  is seeded ``s + i`` and replays exactly what a single env seeded ``s + i`` does;
* episode counters, truncation at ``max_episode_steps`` (and the ``step limit`` end reason), episode
  return/length bookkeeping;
* automatic reset of finished rows inside :meth:`step` (SB3's convention), keeping the finished
  episode's last observation for the caller (``info["final_observation"]``);
* action validation with errors that name the bad value.

No method loops over instances in Python; finished rows are re-initialised as one sub-batch.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from mmrl.core import rng
from mmrl.core.frames import compose, enlarge
from mmrl.core.policy import ReferencePolicy
from mmrl.core.spaces import TextSpace

if TYPE_CHECKING:
    from mmrl.metrics import TaskMetrics


@dataclass
class EnvState:
    """The fields every env's state has; an env's state dataclass subclasses it (batch-first tensors)."""

    elapsed: Tensor
    """int64[B]: steps taken in the current episode. ``_initial_state`` sets it to 0; ``_transition`` may read
    it (the step being taken is ``elapsed + 1``) and leaves it alone: the engine advances it and truncates on it."""


StateT = TypeVar("StateT", bound=EnvState)
Observation = dict[str, Tensor]
Info = dict[str, Any]
#: builds one of an env's reference policies from a seed
PolicyFactory = Callable[[int], ReferencePolicy]


def select_rows(state: StateT, index: Tensor, fields: Sequence[str] | None = None) -> StateT:
    """The rows ``index`` of every tensor field of a dataclass state (of ``fields`` only, when given: the
    others keep all their rows, so only code that reads just ``fields`` may use the result)."""
    names = [f.name for f in dataclasses.fields(state)] if fields is None else fields
    return dataclasses.replace(state, **{name: getattr(state, name).index_select(0, index) for name in names})


def assign_rows(state: StateT, index: Tensor, rows: StateT) -> None:
    """Write ``rows`` (a state of ``len(index)`` rows) into ``state`` at ``index``, in place."""
    for f in dataclasses.fields(state):
        getattr(state, f.name).index_copy_(0, index, getattr(rows, f.name))


#: the largest seed of a row (int64)
MAX_SEED = 2**63 - 1


def as_seed_tensor(seed: int | Sequence[int] | np.ndarray | Tensor, num_envs: int, device: torch.device) -> Tensor:
    """Per-row seeds int64[B]: an int ``s`` gives ``s, s+1, ...`` (as Gymnasium's vector envs do)."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
        if not 0 <= seed <= MAX_SEED - (num_envs - 1):
            raise ValueError(f"seed must be an integer in [0, {MAX_SEED - (num_envs - 1)}] for {num_envs} instances (row i gets seed + i); got {seed}")
        return torch.arange(num_envs, dtype=torch.int64, device=device) + int(seed)
    seeds = torch.as_tensor(np.asarray(seed) if not isinstance(seed, Tensor) else seed, device=device)
    if seeds.shape != (num_envs,) or seeds.dtype.is_floating_point or seeds.dtype == torch.bool:
        raise ValueError(f"seed must be an int or {num_envs} integers; got {seed!r}")
    if bool((seeds < 0).any()):
        raise ValueError(f"seeds must be non-negative; got {seed!r}")
    return seeds.to(torch.int64)


class BatchedEnv(ABC, Generic[StateT]):
    """Base of every mmrl environment: ``num_envs`` instances stepped as one tensor program.

    Subclasses set ``single_observation_space`` (a ``Dict`` with ``image`` and ``text``),
    ``single_action_space`` and ``max_episode_steps`` in ``__init__``. What generic code (evaluation,
    reports, baselines) needs to know about a task it asks through the declarations below, never by the
    class's name: ``end_reasons``, ``value_key``, ``task_metrics``, :meth:`reference_policies`, :meth:`_action_mask`,
    :meth:`describe_action`, :meth:`describe_truth`, :meth:`describe_end`.

    :param num_envs: number of instances ``B``.
    :param device: torch device holding every state tensor.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 2}
    #: The state fields ``_observe`` reads, where it reads only some: the final observations of finished rows
    #: then gather just these fields of those rows (``None``: every field).
    observation_fields: tuple[str, ...] | None = None
    #: What ``info["end_reason"]`` (where the env reports one) indexes: ``running`` first, ``step limit`` last;
    #: the engine sets ``step limit`` on the rows it truncates, so a transition never checks the time limit.
    end_reasons: ClassVar[tuple[str, ...]] = ("running", "step limit")
    #: The info entry holding each action's true expected reward now (float32[B, A]), if the env has one:
    #: the ``oracle`` reference policy takes its argmax (the myopic optimum).
    value_key: ClassVar[str | None] = None
    #: The env's own evaluation metrics (:class:`mmrl.metrics.TaskMetrics`): click-through rate, success rate ...
    task_metrics: ClassVar["TaskMetrics | None"] = None
    #: Attributes and methods whose value is batch-first (row ``i`` belongs to instance ``i``): an SB3 VecEnv's
    #: ``get_attr`` / ``env_method`` hand instance ``i`` its row instead of the whole batch.
    row_members: ClassVar[frozenset[str]] = frozenset({"action_masks", "elapsed", "seeds", "episode", "episode_return"})
    single_observation_space: spaces.Dict
    single_action_space: spaces.Discrete
    max_episode_steps: int

    def __init__(self, num_envs: int, device: torch.device | str = "cpu"):
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer; got {num_envs!r}")
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but CUDA is not available")
        self.validate_actions = True
        self.compiled = False
        self.state: StateT | None = None
        zeros = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        self.seeds = zeros.clone()
        self.episode = zeros.clone()
        self.episode_return = torch.zeros(self.num_envs, dtype=torch.float32, device=self.device)
        self._stream = zeros.clone()
        self._episode_key = zeros.clone()
        self._needs_reset = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)

    # ------------------------------------------------------------------ subclass API
    @abstractmethod
    def _initial_state(self, episode_key: Tensor) -> StateT:
        """Fresh episode states for ``len(episode_key)`` rows, drawn from ``rng.uniform(episode_key, ...)``."""

    @abstractmethod
    def _transition(
        self, state: StateT, actions: Tensor, step_key: Tensor
    ) -> tuple[StateT, Tensor, Tensor, dict[str, Tensor]]:
        """One step for all rows: ``(next_state, reward float32[B], terminated bool[B], step_info)``.

        ``step_info`` describes the step just taken (e.g. whether the user clicked)."""

    @abstractmethod
    def _observe(self, state: StateT) -> Observation:
        """Observation tensors for every row of ``state`` (batch-first, matching the single space)."""

    def _decision_info(self, state: StateT) -> dict[str, Tensor]:
        """Info about the decision the returned observation poses (e.g. true values of each action)."""
        return {}

    def _action_mask(self, state: StateT) -> Tensor:
        """bool[B, A]: the actions that can change anything in each row of ``state`` (e.g. not a test already
        ordered); masking the others loses no return. Every row allows at least one action. Default: all of them.

        Computed only when asked (:meth:`action_masks`, the faces' ``info["action_mask"]``), never by the engine's
        step, so an env whose agents ignore masks pays nothing for them."""
        return torch.ones((state.elapsed.shape[0], int(self.single_action_space.n)), dtype=torch.bool, device=self.device)

    def _frame_lines(self, state: StateT, index: int) -> list[str]:
        """Lines of the text panel of :meth:`render_frame` for instance ``index`` (``state``: its state, one row)."""
        return [f'"{self.decode(self._observe(state)["text"][0])}"']

    def reference_policies(self) -> dict[str, PolicyFactory]:
        """The env's own reference policies, ``name -> factory(seed)`` (scripted, myopic, planners ...).

        ``random``, and ``oracle`` where :attr:`value_key` is declared, are generic
        (:func:`mmrl.agents.reference.make_reference_policy`); an env entry of the same name replaces them."""
        return {}

    def describe_action(self, action: int) -> str:
        """Words for ``action`` in replays and reports (``action_names`` where the env has them)."""
        names = getattr(self, "action_names", None)
        return str(names[action]) if names is not None and 0 <= action < len(names) else f"action {action}"

    def describe_truth(self, state: StateT) -> str:
        """What a replay shows its viewer and not the agent, for a one-row ``state``: the hidden ground truth in
        words (the patient's true condition, the target, the shopper's wish ...); ``""`` where there is none.

        Replays (:mod:`mmrl.video`) and the report's step tables show it beside every observation, so a viewer can
        tell a lucky guess from a right reading (#20). Called once per recorded frame, never in a step."""
        return ""

    def describe_end(self, reason: int) -> str:
        """Words for ``end_reasons[reason]`` in replays and reports ("ended: <words>"); the engine's own step limit
        is "out of steps". An env overrides it where its reasons' names are terse."""
        if reason == len(self.end_reasons) - 1 and self.end_reasons[reason] == "step limit":
            return f"out of steps (step limit {self.max_episode_steps})"
        return self.end_reasons[reason]

    # ------------------------------------------------------------------ properties
    @property
    def elapsed(self) -> Tensor:
        """int64[B]: steps taken in each row's current episode (the state's ``elapsed``)."""
        if self.state is None:
            return torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        return self.state.elapsed

    @property
    def text_space(self) -> TextSpace:
        return self.single_observation_space["text"]  # type: ignore[return-value]

    def action_masks(self) -> Tensor:
        """bool[num_envs, A]: which actions make sense for the observation each row last returned (the env's
        :meth:`_action_mask`); the name and shape sb3-contrib's ``MaskablePPO`` asks for."""
        if self.state is None:
            raise RuntimeError("action_masks() called before reset(); call reset() first")
        return self._action_mask(self.state)

    def decode(self, ids: Tensor | np.ndarray | Sequence[int]) -> str:
        """Token ids of one text observation to the string they stand for."""
        if isinstance(ids, Tensor):
            ids = ids.detach().cpu().numpy()
        return self.text_space.vocabulary.decode(ids)

    # ------------------------------------------------------------------ public API
    def reset(
        self, seed: int | Sequence[int] | Tensor | None = None, mask: Tensor | np.ndarray | None = None
    ) -> tuple[Observation, Info]:
        """Start new episodes in all rows (or in the rows where ``mask`` is true).

        :param seed: ``None`` continues each row's stream with its next episode (a fresh random
            base seed on the very first reset); an int ``s`` seeds row ``i`` with ``s + i``; a
            sequence gives each row its seed.
        :param mask: bool[B]; rows to reset (others keep their episode and are returned unchanged).
        """
        rows = self._reset_rows(mask)
        if seed is not None:
            self.seeds[rows] = as_seed_tensor(seed, self.num_envs, self.device)[rows]
            self._stream[rows] = rng.stream_key(self.seeds[rows])
            self.episode[rows] = 0
        elif self.state is None:
            base = int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
            self.seeds[rows] = as_seed_tensor(base, self.num_envs, self.device)[rows]
            self._stream[rows] = rng.stream_key(self.seeds[rows])
            self.episode[rows] = 0
        else:
            self.episode[rows] += 1
        self._begin_episodes(rows)
        obs = self._observe(self.state)
        return obs, self._decision_info(self.state)

    def step(self, actions: Tensor | np.ndarray, autoreset: bool = True) -> tuple[Observation, Tensor, Tensor, Tensor, Info]:
        """Advance every row by one step.

        :param actions: int64[B] (a tensor on any device, or a numpy array).
        :param autoreset: restart finished rows in the same call (their last observation goes to
            ``info["final_observation"]``, indexed by ``info["done_index"]``). Without it a finished
            row must be reset before it is stepped again.
        :returns: ``(obs, reward float32[B], terminated bool[B], truncated bool[B], info)``.
        """
        if self.state is None:
            raise RuntimeError("step() called before reset(); call reset() first")
        actions = self._check_actions(actions)
        if not autoreset and bool(self._needs_reset.any()):
            bad = torch.nonzero(self._needs_reset).flatten().tolist()[:8]
            raise RuntimeError(f"step() called on finished episodes (rows {bad}); call reset() first")
        (self.state, reward, terminated, truncated, length, total, self.episode_return,
         self.episode, self._episode_key, step_info, decision_info) = self._advance(
            self.state, actions, self._stream, self.episode, self._episode_key, self.episode_return, autoreset,
        )
        info: Info = dict(step_info)
        info["episode_return"] = total
        info["episode_length"] = length
        done = terminated | truncated
        if autoreset:
            done_index = torch.nonzero(done).flatten()
            info["done_index"] = done_index
            info["final_observation"] = self._observe(select_rows(self.state, done_index, self.observation_fields))
            if done_index.numel():
                fresh, fresh_info = self._fresh_rows(self._episode_key.index_select(0, done_index))
                assign_rows(self.state, done_index, fresh)
                decision_info = {k: v.index_copy(0, done_index, fresh_info[k]) for k, v in decision_info.items()}
        else:
            self._needs_reset = done
        obs = self._observe(self.state)
        info.update(decision_info)
        return obs, reward, terminated, truncated, info

    def successor(self, rows: Tensor, actions: Tensor) -> StateT:
        """The state rows ``rows`` will reach when :meth:`step` takes ``actions`` (int64[len(rows)]) there, as the
        transition leaves it, before any autoreset: one ``_transition`` of a copy of those rows on the same step
        keys, the env untouched. Replays read the hidden truth of an episode's last state from it, since the engine
        replaces a finished row's state within the step (:mod:`mmrl.video`)."""
        if self.state is None:
            raise RuntimeError("successor() called before reset(); call reset() first")
        state = select_rows(self.state, rows)
        key = rng.step_key(self._episode_key.index_select(0, rows), state.elapsed)
        next_state, _, _, _ = self._transition(state, actions.to(self.device, torch.int64), key)
        return dataclasses.replace(next_state, elapsed=state.elapsed + 1)

    def compile(self, **options: Any) -> "BatchedEnv[StateT]":
        """Fuse this env's tensor programs with ``torch.compile``; returns ``self``.

        The step (``_transition``, the engine's bookkeeping and ``_decision_info``, static shapes), the fresh rows of
        the resets (``_initial_state`` and their ``_decision_info``, any number of rows) and the decision info of a
        reset each become generated kernels (C++ on the CPU, Triton on CUDA) instead of dozens of small torch ops;
        rendering stays an ``index_select`` of sprite strips, which a generated gather does not beat. Episodes are
        unchanged: the same seeds give the same observations, rewards and infos (BENCHMARKS.md has the speed-up).
        The first steps pay the compilation (tens of seconds on 2 cores), so use it for long runs with many
        instances. The compiler leaves many long-lived Python objects behind; a long-running program should call
        ``gc.collect(); gc.freeze()`` once the first steps have run, or full garbage-collector passes over them
        stall steps (``python -m mmrl.train env.compile=true`` does so after its first rollout).

        ``options`` go to ``torch.compile`` (e.g. ``mode="max-autotune"``). On the CPU, Inductor's options default
        to ``{"cpp.simdlen": 1}`` (scalar C++): these programs are integer hashing and indexing, and AVX2 has no
        vector int64 multiply, so vectorized code is no faster; pass ``options={"cpp.simdlen": None}`` to let
        Inductor vectorize (or ``mode=...``, which leaves its options alone)."""
        if self.compiled:
            return self
        options = self._compile_options(options)
        self._advance = torch.compile(self._advance, dynamic=False, **options)  # type: ignore[method-assign]
        self._fresh_rows = torch.compile(self._fresh_rows, dynamic=True, **options)  # type: ignore[method-assign]
        self._decision_info = torch.compile(self._decision_info, dynamic=False, **options)  # type: ignore[method-assign]
        self.compiled = True
        return self

    def _compile_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """``torch.compile``'s keyword arguments: ``options`` with scalar C++ for the CPU unless they say otherwise."""
        if self.device.type != "cpu" or "mode" in options:
            return options
        return {**options, "options": {"cpp.simdlen": 1, **(options.get("options") or {})}}

    def _advance(
        self,
        state: StateT,
        actions: Tensor,
        stream: Tensor,
        episode: Tensor,
        episode_key: Tensor,
        episode_return: Tensor,
        autoreset: bool,
    ) -> tuple[StateT, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """One step of every row and its bookkeeping, as one tensor program (what :meth:`compile` fuses).

        Returns ``(state, reward, terminated, truncated, episode_length, episode_return`` of the step,
        then the counters to keep: ``episode_return, episode, episode_key`` (with ``autoreset``, those of
        finished rows already start their next episode), ``step_info, decision_info)``: the
        ``_decision_info`` of the new state (finished rows: of their last state; :meth:`step` swaps in
        their next episode's). The state's ``elapsed`` counts the step; finished rows keep their last state
        until :meth:`step` writes their next episode's first one."""
        elapsed = state.elapsed
        state, reward, terminated, step_info = self._transition(state, actions, rng.step_key(episode_key, elapsed))
        length = elapsed + 1
        state = dataclasses.replace(state, elapsed=elapsed + 1)  # its own tensor: autoreset writes into it, not into length
        decision_info = type(self)._decision_info(self, state)  # the method itself: traced into this program
        total = episode_return + reward
        truncated = (length >= self.max_episode_steps) & ~terminated
        if "end_reason" in step_info:  # the engine, not the env, knows the time limit
            step_info = {**step_info, "end_reason": torch.where(
                truncated & (step_info["end_reason"] == 0), len(self.end_reasons) - 1, step_info["end_reason"]
            )}  # fmt: skip
        if not autoreset:
            return (state, reward, terminated, truncated, length, total, total.clone(), episode, episode_key,
                    step_info, decision_info)
        done = terminated | truncated
        episode = episode + done.to(episode.dtype)
        episode_key = torch.where(done, rng.episode_key(stream, episode), episode_key)
        kept_return = torch.where(done, 0.0, total)
        return (state, reward, terminated, truncated, length, total, kept_return, episode, episode_key,
                step_info, decision_info)

    def _fresh_rows(self, episode_key: Tensor) -> tuple[StateT, dict[str, Tensor]]:
        """The first states of the episodes keyed ``episode_key`` and their ``_decision_info`` (one program
        when compiled)."""
        state = self._initial_state(episode_key)
        return state, type(self)._decision_info(self, state)

    def render_frame(self, index: int = 0, scale: int = 4) -> np.ndarray:
        """HWC uint8 frame of instance ``index``: its observation image enlarged ``scale`` times, beside a text
        panel (the env's :meth:`_frame_lines`: the decoded text, the last action and outcome...)."""
        if self.state is None:
            raise RuntimeError("render() called before reset()")
        row = select_rows(self.state, torch.tensor([index], device=self.device))
        image = self._observe(row)["image"][0].cpu().numpy()
        return compose(enlarge(image, scale), self._frame_lines(row, index))

    # ------------------------------------------------------------------ internals
    def _reset_rows(self, mask: Tensor | np.ndarray | None) -> Tensor:
        if mask is None:
            return torch.arange(self.num_envs, device=self.device)
        mask = torch.as_tensor(mask, device=self.device)
        if mask.shape != (self.num_envs,) or mask.dtype != torch.bool:
            raise ValueError(f"reset mask must be bool[{self.num_envs}]; got {mask.dtype} {tuple(mask.shape)}")
        if self.state is None and not bool(mask.all()):
            raise RuntimeError("the first reset() must reset every row (mask=None)")
        return torch.nonzero(mask).flatten()

    def _begin_episodes(self, rows: Tensor) -> None:
        self._episode_key[rows] = rng.episode_key(self._stream[rows], self.episode[rows])
        self.episode_return[rows] = 0.0
        self._needs_reset[rows] = False
        fresh, _ = self._fresh_rows(self._episode_key[rows])
        if self.state is None:  # contiguous fields: one memory layout for every later step
            self.state = dataclasses.replace(
                fresh, **{f.name: getattr(fresh, f.name).contiguous() for f in dataclasses.fields(fresh)}
            )
        else:
            assign_rows(self.state, rows, fresh)

    def _check_actions(self, actions: Tensor | np.ndarray) -> Tensor:
        if not isinstance(actions, Tensor):
            array = np.asarray(actions)
            if array.dtype == object:
                raise ValueError(f"actions must be integers; got {actions!r}")
            actions = torch.from_numpy(np.ascontiguousarray(array))
        n = self.single_action_space.n
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},); got {tuple(actions.shape)}")
        if actions.dtype.is_floating_point or actions.dtype.is_complex or actions.dtype == torch.bool:
            nan = " (contains NaN)" if actions.dtype.is_floating_point and bool(torch.isnan(actions).any()) else ""
            raise ValueError(f"actions must be integers in [0, {n}); got dtype {actions.dtype}{nan}: {actions[:8].tolist()}")
        actions = actions.to(self.device, torch.int64, non_blocking=True)
        if self.validate_actions:
            bad = (actions < 0) | (actions >= n)
            if bool(bad.any()):
                rows = torch.nonzero(bad).flatten()[:8]
                raise ValueError(
                    f"actions must be in [0, {n}); got {actions[rows].tolist()} at rows {rows.tolist()}"
                )
        return actions
