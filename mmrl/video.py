"""Replay videos of evaluation episodes: record chosen rows of a batched run, draw frames, write H.264 MP4.

Frames (one per observation, so an episode of ``T`` steps gives ``T + 1`` frames)::

    +----------------------+----------------------+-------------------------------+
    | "acted on"           | "now"                | "decoded text of now"         |
    +----------------------+----------------------+ step t/T  action, reward      |
    | previous observation | observation now      | return so far                 |
    | (the chosen slot     |                      |                               |
    |  outlined)           |                      |                               |
    +----------------------+----------------------+-------------------------------+

Frame 0 shows the initial observation (the left picture is blank); frame ``t`` shows the observation after
step ``t`` (the last one is the episode's final observation) with the action, reward and running return of
step ``t``. The action is drawn on the picture it was taken on because an env may change the whole picture
in one step (Recommend reshuffles the slate). Env hooks, both optional: ``env.slot_box(action, scale)`` (a
pixel box to outline) and ``env.describe_action(action) -> str``.

Videos are H.264 (``libx264``, ``yuv420p``, even sizes, ``+faststart``) written by the ffmpeg binary that
ships with ``imageio-ffmpeg``, since OpenCV's wheel cannot encode H.264 and its MPEG-4 part 2 files do not
play in browsers. Files are written to a temporary name and moved into place.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from mmrl.core.batched_env import BatchedEnv, Info, Observation
from mmrl.core.frames import compose, enlarge, outline
from mmrl.episodes import ActFn, UpdateFn

CAPTION_HEIGHT = 20
_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Bit-exact output: same frames -> same bytes (no encoder version string, no metadata, one thread).
_X264_PARAMS = [
    "-preset", "medium", "-crf", "20", "-threads", "1", "-movflags", "+faststart",
    "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
]


@dataclass
class Trajectory:
    """One recorded episode: ``T + 1`` observations and the ``T`` actions and rewards between them.

    ``images[t]`` is ``uint8[3, H, W]``; ``returns[t]`` is the return after step ``t + 1``."""

    seed: int
    images: list[np.ndarray] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    done: bool = False

    @property
    def length(self) -> int:
        return len(self.actions)


class EpisodeRecorder:
    """Records the first episode of some rows of a :func:`~mmrl.episodes.run_episodes` call: rows ``0 .. rows-1``,
    or the rows listed (e.g. the best, median and worst episodes of an earlier run on the same seeds).

    Wrap the policy with :meth:`wrap_act` and :meth:`wrap_update`; the other rows cost nothing.

    :param env: the batched env being run.
    :param rows: how many leading rows to record, or which rows (``trajectories[j]`` is row ``rows[j]``).
    :param seed: the run's base seed (row ``i`` is seeded ``seed + i``).
    """

    def __init__(self, env: BatchedEnv, rows: int | Sequence[int], seed: int):
        self.env = env
        self.row_ids = list(range(min(int(rows), env.num_envs))) if isinstance(rows, int) else [int(r) for r in rows]
        if any(not 0 <= r < env.num_envs for r in self.row_ids):
            raise ValueError(f"rows {self.row_ids} must lie in [0, {env.num_envs})")
        self.rows = len(self.row_ids)
        self._index = torch.as_tensor(self.row_ids, dtype=torch.int64)
        self.trajectories = [Trajectory(seed=seed + r) for r in self.row_ids]
        self._previous_return = np.zeros(self.rows, dtype=np.float64)

    def _live(self) -> list[int]:
        return [i for i, t in enumerate(self.trajectories) if not t.done]

    def _append_observation(self, row: int, image: Tensor, text: Tensor) -> None:
        trajectory = self.trajectories[row]
        trajectory.images.append(image.cpu().numpy())
        trajectory.texts.append(self.env.decode(text))

    def wrap_act(self, act: ActFn) -> ActFn:
        """``act`` that also records each live recorded row's observation and action."""

        def recorded(obs: Observation, info: Info) -> Tensor:
            actions = act(obs, info)
            live = self._live()
            if live:
                taken = torch.as_tensor(actions).cpu()[self._index].numpy()
                for i in live:
                    row = self.row_ids[i]
                    self._append_observation(i, obs["image"][row], obs["text"][row])
                    self.trajectories[i].actions.append(int(taken[i]))
            return actions

        return recorded

    def wrap_update(self, update: UpdateFn | None) -> UpdateFn:
        """``update`` that also records rewards, running returns and final observations."""

        def recorded(info: Info, done: Tensor) -> None:
            if update is not None:
                update(info, done)
            live = self._live()
            if not live:
                return
            returns = info["episode_return"].cpu()[self._index].numpy().astype(np.float64)
            finished = done.cpu()[self._index].numpy()
            done_rows = info["done_index"].cpu().tolist()
            for i in live:
                trajectory = self.trajectories[i]
                trajectory.rewards.append(float(returns[i] - self._previous_return[i]))
                trajectory.returns.append(float(returns[i]))
                self._previous_return[i] = returns[i]
                if finished[i]:
                    j = done_rows.index(self.row_ids[i])
                    final = info["final_observation"]
                    self._append_observation(i, final["image"][j], final["text"][j])
                    trajectory.done = True

        return recorded


def describe_action(env: BatchedEnv, action: int) -> str:
    """The env's words for ``action`` (hook ``describe_action``), else ``slot k`` / ``action k``."""
    hook = getattr(env, "describe_action", None)
    if callable(hook):
        return str(hook(action))
    return f"slot {action}" if hasattr(env, "slot_box") else f"action {action}"


def _caption(width: int, text: str) -> np.ndarray:
    strip = np.full((CAPTION_HEIGHT, width, 3), 40, dtype=np.uint8)
    cv2.putText(strip, text, (6, CAPTION_HEIGHT - 6), _FONT, 0.42, (220, 220, 220), 1, cv2.LINE_AA)
    return strip


def replay_frame(
    env: BatchedEnv,
    trajectory: Trajectory,
    t: int,
    scale: int = 4,
) -> np.ndarray:
    """HWC uint8 frame ``t`` (``0 .. T``) of ``trajectory``: see the module docstring for the layout."""
    now = enlarge(trajectory.images[t], scale)
    if t == 0:
        before = np.zeros_like(now)
        action_line, left_label = "start of episode", "(no action yet)"
        reward_line = f"return {0.0:.2f}"
    else:
        action = trajectory.actions[t - 1]
        before = enlarge(trajectory.images[t - 1], scale)
        box_of = getattr(env, "slot_box", None)
        if callable(box_of):
            outline(before, box_of(action, scale), width=max(2, scale // 2 + 1))
        action_line = f"action: {describe_action(env, action)}"
        left_label = "acted on (choice outlined)" if callable(box_of) else "acted on"
        reward_line = f"reward {trajectory.rewards[t - 1]:+.2f}   return {trajectory.returns[t - 1]:.2f}"
    width = now.shape[1]
    # the labels go above the pictures: browsers draw the player's controls over the bottom of a video
    picture = np.concatenate(
        [
            np.concatenate([_caption(width, left_label), before], axis=0),
            np.full((now.shape[0] + CAPTION_HEIGHT, 4, 3), 90, dtype=np.uint8),
            np.concatenate([_caption(width, "now"), now], axis=0),
        ],
        axis=1,
    )
    end = " (end)" if t == trajectory.length and trajectory.done else ""
    lines = [
        f'"{trajectory.texts[t]}"',
        f"step {t}/{env.max_episode_steps}{end}   seed {trajectory.seed}",
        action_line,
        reward_line,
    ]
    return compose(picture, lines)


def poster_index(trajectory: Trajectory) -> int:
    """The frame a video shows before it plays: one from the middle of the episode (frame 0 has no picture on the
    left yet, and the last one may show the start of nothing)."""
    return max(1, len(trajectory.images) // 2) if len(trajectory.images) > 1 else 0


def step_rows(env: BatchedEnv, trajectory: Trajectory) -> list[dict[str, object]]:
    """The episode as a table, one row per frame: ``step``, the ``text`` seen, the ``action`` taken at that step (by
    the env's name for it), its ``reward`` and the ``return`` so far (frame 0: the first observation, no action)."""
    rows: list[dict[str, object]] = []
    for t, text in enumerate(trajectory.texts):
        row: dict[str, object] = {"step": t, "text": text, "action": None, "reward": None, "return": 0.0}
        if t > 0:
            row.update(action=describe_action(env, trajectory.actions[t - 1]), reward=round(trajectory.rewards[t - 1], 4),
                       **{"return": round(trajectory.returns[t - 1], 4)})  # fmt: skip
        rows.append(row)
    return rows


def write_png(path: str | os.PathLike[str], frame: np.ndarray) -> Path:
    """Write an HWC uint8 RGB frame as a PNG (e.g. a video's poster); atomic."""
    from mmrl.runs import atomic_write

    ok, data = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode a {frame.shape} frame as PNG")
    return atomic_write(path, lambda file: file.write(data.tobytes()))


def replay_frames(env: BatchedEnv, trajectory: Trajectory, scale: int = 4) -> list[np.ndarray]:
    """All ``T + 1`` frames of ``trajectory``."""
    return [replay_frame(env, trajectory, t, scale) for t in range(len(trajectory.images))]


def write_mp4(path: str | os.PathLike[str], frames: Sequence[np.ndarray], fps: float = 2.0) -> Path:
    """Write HWC uint8 RGB ``frames`` (all one size) as an H.264 MP4 that browsers play; atomic.

    Odd heights or widths are padded by one black pixel (``yuv420p`` needs even sizes)."""
    import imageio_ffmpeg

    if not frames:
        raise ValueError("write_mp4 needs at least one frame")
    if fps <= 0:
        raise ValueError(f"fps must be positive; got {fps}")
    path = Path(path)
    height, width = frames[0].shape[:2]
    even_h, even_w = height + height % 2, width + width % 2
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    writer = imageio_ffmpeg.write_frames(
        str(tmp),
        (even_w, even_h),
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        quality=None,
        macro_block_size=1,
        output_params=list(_X264_PARAMS),
        ffmpeg_log_level="error",
    )
    writer.send(None)  # start ffmpeg
    try:
        for frame in frames:
            if frame.shape[:2] != (height, width) or frame.dtype != np.uint8 or frame.shape[2] != 3:
                raise ValueError(f"frames must all be uint8[{height}, {width}, 3]; got {frame.dtype}{list(frame.shape)}")
            if (even_h, even_w) != (height, width):
                frame = np.pad(frame, ((0, even_h - height), (0, even_w - width), (0, 0)))
            writer.send(np.ascontiguousarray(frame))
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, path)
    return path


def video_codec(path: str | os.PathLike[str]) -> str:
    """The codec name of the first video stream of ``path`` (e.g. ``h264``), as ffmpeg reports it."""
    import imageio_ffmpeg

    result = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Stream #\S+.*?: Video: (\w+)", result.stderr)
    if match is None:
        raise ValueError(f"no video stream found in {path}: {result.stderr.strip()[-300:]}")
    return match.group(1)
