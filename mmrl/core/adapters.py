"""The three faces of a batched env: a Gymnasium ``Env``, a Gymnasium ``VectorEnv`` and an SB3 ``VecEnv``.

All three drive the same :class:`~mmrl.core.batched_env.BatchedEnv`; they only convert tensors to
numpy and shape the ``info`` the way each library expects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from stable_baselines3.common.vec_env import VecEnv
from torch import Tensor

from mmrl.core.batched_env import BatchedEnv, Info, Observation


#: the info entry of the action mask on every face (sb3-contrib's and TorchRL's name)
ACTION_MASK = "action_mask"


def to_numpy(tree: Any) -> Any:
    """Tensors (possibly nested in dicts) to numpy arrays."""
    if isinstance(tree, Tensor):
        return tree.detach().cpu().numpy()
    if isinstance(tree, dict):
        return {k: to_numpy(v) for k, v in tree.items()}
    return tree


def row_info(info: Info, num_envs: int, row: int) -> dict[str, Any]:
    """The per-row entries of a batched info (tensors with a leading batch dimension), as numpy: arrays, and numpy
    scalars (``np.float32``, ``np.bool_`` ...) for per-row scalars, never Python numbers, so every value has a dtype
    (TorchRL's info readers build their specs from it)."""
    out = {}
    for key, value in info.items():
        if isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == num_envs:
            item = value[row].detach().cpu().numpy()
            out[key] = item[()] if item.ndim == 0 else item
    return out


def batch_info(info: Info, num_envs: int) -> dict[str, np.ndarray]:
    """The per-row entries of a batched info as numpy arrays, each with Gymnasium's ``_key`` mask."""
    out: dict[str, np.ndarray] = {}
    for key, value in info.items():
        if isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == num_envs:
            out[key] = value.detach().cpu().numpy()
            out[f"_{key}"] = np.ones(num_envs, dtype=bool)
    return out


def check_reset_options(options: dict[str, Any] | None) -> None:
    """The envs take no reset options (their settings are constructor options): refuse any, rather than ignore them.

    :raises ValueError: naming the options given."""
    if options:
        raise ValueError(
            f"reset() takes no options; got {sorted(options)} (env settings are keyword arguments of gym.make / make_vec)"
        )


class SingleEnv(gym.Env):
    """A Gymnasium ``Env`` over one instance of a batched env on the CPU (numpy observations).

    :param batched_env: a :class:`BatchedEnv` with ``num_envs == 1``.
    :param render_mode: ``None`` or ``"rgb_array"``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(self, batched_env: BatchedEnv, render_mode: str | None = None):
        if batched_env.num_envs != 1:
            raise ValueError(f"SingleEnv needs a batched env with num_envs=1; got {batched_env.num_envs}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array'; got {render_mode!r}")
        self.batched_env = batched_env
        self.render_mode = render_mode
        self.observation_space = batched_env.single_observation_space
        self.action_space = batched_env.single_action_space
        self.metadata = dict(batched_env.metadata)

    @staticmethod
    def _row(obs: Observation) -> dict[str, np.ndarray]:
        return {k: v[0].detach().cpu().numpy() for k, v in obs.items()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        check_reset_options(options)
        super().reset(seed=seed)
        if seed is None and self.batched_env.state is None:
            seed = int(self.np_random.integers(2**31 - 1))
        obs, info = self.batched_env.reset(seed=seed)
        return self._row(obs), self._info(info)

    def step(self, action: Any):
        if isinstance(action, (bool, np.bool_)) or not self.action_space.contains(action):  # True is an int to Python
            raise ValueError(
                f"invalid action {action!r} ({type(action).__name__}): expected an integer in [0, {self.action_space.n})"
            )
        actions = torch.as_tensor([int(action)], dtype=torch.int64)
        obs, reward, terminated, truncated, info = self.batched_env.step(actions, autoreset=False)
        return self._row(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), self._info(info)

    def _info(self, info: Info) -> dict[str, Any]:
        return {**row_info(info, 1, 0), ACTION_MASK: self.action_masks()}

    def action_masks(self) -> np.ndarray:
        """bool[A]: the actions that can change anything now (sb3-contrib's ``MaskablePPO`` calls this; also in
        ``info["action_mask"]``)."""
        return self.batched_env.action_masks()[0].cpu().numpy()

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode='rgb_array'; returning None")
            return None
        return self.batched_env.render_frame(0)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Token ids of a text observation to the string."""
        return self.batched_env.decode(ids)


class GymVectorEnv(gym.vector.VectorEnv):
    """A native Gymnasium ``VectorEnv`` over a batched env; numpy out.

    With ``autoreset_mode=SAME_STEP`` (the default) finished sub-envs restart within the same ``step``; their last
    observation and info are in ``infos["final_obs"]`` / ``infos["final_info"]`` with the masks ``_final_obs`` /
    ``_final_info``. With ``DISABLED`` a finished sub-env keeps its last observation until the caller resets it
    (``reset(options={"reset_mask": mask})``); stepping it before raises. TorchRL's ``GymWrapper`` prefers this
    mode: in 0.14 it reads the final observation of a same-step reset only for non-``Dict`` observation spaces.

    :param autoreset_mode: ``AutoresetMode.SAME_STEP`` or ``AutoresetMode.DISABLED`` (or their values).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(
        self,
        batched_env: BatchedEnv,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
    ):
        modes = (AutoresetMode.SAME_STEP, AutoresetMode.DISABLED)
        mode = autoreset_mode if isinstance(autoreset_mode, AutoresetMode) else next(
            (m for m in modes if autoreset_mode in (m.value, m.name)), None
        )  # fmt: skip
        if mode not in modes:
            raise ValueError(f"autoreset_mode must be one of {[m.value for m in modes]}; got {autoreset_mode!r}")
        self.batched_env = batched_env
        self.num_envs = batched_env.num_envs
        self.render_mode = render_mode
        # Gymnasium's own vector envs carry the mode as an attribute and in metadata; wrappers (TorchRL) read both.
        self.autoreset_mode = mode
        self.metadata = {**type(self).metadata, "autoreset_mode": mode}
        self.single_observation_space = batched_env.single_observation_space
        self.single_action_space = batched_env.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None):
        options = dict(options or {})
        mask = options.pop("reset_mask", None)  # Gymnasium's vector API: reset only these sub-envs
        check_reset_options(options)
        obs, info = self.batched_env.reset(seed=seed, mask=mask)
        infos = batch_info(info, self.num_envs)
        infos[ACTION_MASK], infos[f"_{ACTION_MASK}"] = self.action_masks(), np.ones(self.num_envs, dtype=bool)
        return to_numpy(obs), infos

    def step(self, actions: np.ndarray):
        autoreset = self.autoreset_mode == AutoresetMode.SAME_STEP
        obs, reward, terminated, truncated, info = self.batched_env.step(actions, autoreset=autoreset)
        infos = batch_info(info, self.num_envs)
        done_index = info["done_index"].cpu().numpy() if autoreset else np.zeros(0, dtype=np.int64)
        if done_index.size:
            mask = np.zeros(self.num_envs, dtype=bool)
            mask[done_index] = True
            final_obs = np.full(self.num_envs, None, dtype=object)
            final = to_numpy(info["final_observation"])
            for j, row in enumerate(done_index):  # only the finished rows
                final_obs[row] = {k: v[j] for k, v in final.items()}
            infos["final_obs"], infos["_final_obs"] = final_obs, mask
            infos["final_info"] = {k: v for k, v in infos.items() if not k.startswith("_") and k not in ("final_obs",)}
            infos["final_info"].update({f"_{k}": mask for k in list(infos["final_info"])})
            infos["_final_info"] = mask
        # the mask of the returned observations (finished rows: of their next episode's first), not in final_info
        infos[ACTION_MASK], infos[f"_{ACTION_MASK}"] = self.action_masks(), np.ones(self.num_envs, dtype=bool)
        return (
            to_numpy(obs),
            reward.cpu().numpy().astype(np.float64),
            terminated.cpu().numpy(),
            truncated.cpu().numpy(),
            infos,
        )

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode is None:
            return None
        return tuple(self.batched_env.render_frame(i) for i in range(self.num_envs))

    def action_masks(self) -> np.ndarray:
        """bool[num_envs, A]: the actions that can change anything now, per sub-env (also ``infos["action_mask"]``)."""
        return self.batched_env.action_masks().cpu().numpy()

    def close_extras(self, **kwargs: Any) -> None:
        pass


class SB3VecEnv(VecEnv):
    """A Stable-Baselines3 ``VecEnv`` over a batched env.

    Observations are numpy by default (stock SB3). With ``as_tensors=True`` they stay torch tensors
    on the env's device, for mmrl's device-resident agents. Each finished env's info carries
    ``terminal_observation``, ``TimeLimit.truncated`` and ``episode`` (``r``, ``l``, as SB3's
    Monitor writes it), so no extra monitor wrapper is needed. ``env_method("action_masks")`` gives each env
    its row of the action masks, so sb3-contrib's ``MaskablePPO`` needs no wrapper. ``get_attr`` / ``env_method``
    reach the one batched env: names in its ``row_members`` give env ``i`` row ``i``, others the same value for
    every env. Other env info is per-row on request:

    :param info_keys: names of batched-info entries to copy into every env's info dict (and ``reset_infos``, where
        the reset's info has them); ``"action_mask"`` adds each env's action mask. On request only: a dict entry
        per env and step costs about as much as Navigate's whole mask, and MaskablePPO asks ``env_method`` anyway.
    """

    def __init__(self, batched_env: BatchedEnv, as_tensors: bool = False, info_keys: Sequence[str] = ()):
        self.batched_env = batched_env
        self.as_tensors = as_tensors
        self.info_keys = tuple(info_keys)
        self.render_mode = "rgb_array"
        self._actions: Tensor | np.ndarray | None = None
        self.last_info: Info = {}
        super().__init__(batched_env.num_envs, batched_env.single_observation_space, batched_env.single_action_space)

    def _out(self, obs: Observation) -> Any:
        return obs if self.as_tensors else to_numpy(obs)

    def reset(self):
        seeds = None if self._seeds[0] is None else [int(s) for s in self._seeds]  # type: ignore[arg-type]
        obs, info = self.batched_env.reset(seed=seeds)
        self._reset_seeds()
        self._reset_options()
        self.last_info = info
        self.reset_infos = self._row_infos(info, at_reset=True)
        return self._out(obs)

    def _row_infos(self, info: Info, at_reset: bool = False) -> list[dict[str, Any]]:
        """One info dict per env holding its row of each of ``info_keys`` (at a reset: of those the reset has)."""
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        keys = [k for k in self.info_keys if not at_reset or k in info or k == ACTION_MASK]
        if keys:
            if ACTION_MASK in keys and ACTION_MASK not in info:  # computed only when asked for
                info = {**info, ACTION_MASK: self.batched_env.action_masks()}
            host = {k: info[k].cpu().numpy() for k in keys}
            for i, row in enumerate(infos):
                row.update({k: v[i] for k, v in host.items()})
        return infos

    def step_async(self, actions: np.ndarray | Tensor) -> None:
        self._actions = actions

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async()")
        obs, reward, terminated, truncated, info = self.batched_env.step(self._actions)
        self._actions = None
        self.last_info = info
        done = terminated | truncated
        infos = self._row_infos(info)
        done_index = info["done_index"].cpu().numpy()
        if done_index.size:
            final = info["final_observation"] if self.as_tensors else to_numpy(info["final_observation"])
            time_limit = (truncated & ~terminated)[info["done_index"]].cpu().numpy()
            returns = info["episode_return"][info["done_index"]].cpu().numpy()
            lengths = info["episode_length"][info["done_index"]].cpu().numpy()
            for j, row in enumerate(done_index.tolist()):  # only the finished rows
                infos[row]["terminal_observation"] = {k: v[j] for k, v in final.items()}
                infos[row]["TimeLimit.truncated"] = bool(time_limit[j])
                infos[row]["episode"] = {"r": float(returns[j]), "l": int(lengths[j])}
        if self.as_tensors:
            return obs, reward, done, infos
        return to_numpy(obs), reward.cpu().numpy(), done.cpu().numpy(), infos

    def close(self) -> None:
        pass

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [self.batched_env.render_frame(i) for i in range(self.num_envs)]

    def _targets(self, indices: Any) -> list[int]:
        """The env indices SB3's ``indices`` argument names (``None``: all, an int, or a sequence of ints).

        :raises IndexError: naming any index outside ``[0, num_envs)``."""
        targets = list(self._get_indices(indices))
        bad = [i for i in targets if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer))
               or not 0 <= i < self.num_envs]  # fmt: skip
        if bad:
            raise IndexError(f"env indices must be integers in [0, {self.num_envs}); got {bad[:8]} in indices={indices!r}")
        return [int(i) for i in targets]

    def _per_env(self, name: str, value: Any, targets: list[int]) -> list[Any]:
        """``value`` for each target env: its row where ``name`` is one of the batched env's ``row_members`` (and
        ``value`` an array, not e.g. the method itself that ``get_attr("action_masks")`` fetches)."""
        if name not in self.batched_env.row_members or not isinstance(value, (Tensor, np.ndarray)):
            return [value for _ in targets]
        if isinstance(value, Tensor) and not self.as_tensors:
            value = value.cpu().numpy()
        return [value[i] for i in targets]

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        targets = self._targets(indices)
        if attr_name == "render_mode":
            return [self.render_mode for _ in targets]
        return self._per_env(attr_name, getattr(self.batched_env, attr_name), targets)

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Set ``attr_name`` on the one batched env, which every env shares (``indices`` are only checked)."""
        self._targets(indices)
        setattr(self.batched_env, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        """Call ``method_name`` once on the batched env; each env in ``indices`` gets its row of the result (for
        ``row_members`` such as ``action_masks``) or the result itself."""
        targets = self._targets(indices)
        result = getattr(self.batched_env, method_name)(*method_args, **method_kwargs)
        return self._per_env(method_name, result, targets)

    def action_masks(self) -> np.ndarray | Tensor:
        """bool[num_envs, A]: the actions that can change anything now, per env (a tensor with ``as_tensors``)."""
        masks = self.batched_env.action_masks()
        return masks if self.as_tensors else masks.cpu().numpy()

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [False for _ in self._targets(indices)]


EnvFactory = Callable[..., BatchedEnv]
