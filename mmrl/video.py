"""Replay videos of evaluation episodes: record chosen rows of a batched run, draw frames, write H.264 MP4.

Frames (one per observation, so an episode of ``T`` steps gives ``T + 1`` frames)::

    +----------------------+----------------------+-------------------------------+
    | "acted on"           | "now"                | "decoded text of now"         |
    +----------------------+----------------------+ step t/T  action, reward      |
    | previous observation | observation now      | return so far                 |
    | (the chosen slot     |                      | outcome / ended: <reason>     |
    |  outlined)           |                      | truth: <hidden ground truth>  |
    +----------------------+----------------------+-------------------------------+

Frame 0 shows the initial observation (the left picture is blank); frame ``t`` shows the observation after
step ``t`` (the last one is the episode's final observation) with the action, reward and running return of
step ``t``. The action is drawn on the picture it was taken on because an env may change the whole picture
in one step (Recommend reshuffles the slate). Below them, in colour, what the agent could not see: the end
reason of the step where the env reports one (``info["end_reason"]`` in the env's words,
:meth:`~mmrl.core.batched_env.BatchedEnv.describe_end`; "ended: ..." on the last frame) and the hidden ground
truth of the state the frame shows (:meth:`~mmrl.core.batched_env.BatchedEnv.describe_truth`: the patient's
condition, the target, the shopper's wish, the student's mastery). The engine restarts a finished row within the
step, so the last frame's truth is that of the state the last action was taken in. Frames are as tall as their
panel needs (the picture gets a plain margin below). Env hooks, all optional: ``env.slot_box(action, scale)`` (a
pixel box to outline), ``env.describe_action(action) -> str``, ``describe_truth`` and ``describe_end``.

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

from mmrl.core.batched_env import BatchedEnv, EnvState, Info, Observation, select_rows
from mmrl.core.frames import PanelLine, compose, enlarge, outline, panel_height
from mmrl.episodes import ActFn, UpdateFn

CAPTION_HEIGHT = 20
#: panel colours (RGB) of what only the viewer sees: the end reason and the hidden ground truth
END_COLOUR = (255, 214, 90)
TRUTH_COLOUR = (130, 215, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Bit-exact output: same frames -> same bytes (no encoder version string, no metadata, one thread).
_X264_PARAMS = [
    "-preset", "medium", "-crf", "20", "-threads", "1", "-movflags", "+faststart",
    "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
]


@dataclass
class Trajectory:
    """One recorded episode: ``T + 1`` observations and the ``T`` actions and rewards between them.

    ``images[t]`` is ``uint8[3, H, W]``; ``returns[t]`` is the return after step ``t + 1``; ``truths[t]`` the env's
    hidden ground truth at observation ``t`` (the last one: of the state the last action was taken in);
    ``outcomes[t]`` the end reason step ``t + 1`` reported, in words (``""``: none, the episode goes on);
    ``end`` why the episode ended (``""`` while it runs)."""

    seed: int
    images: list[np.ndarray] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    truths: list[str] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    end: str = ""
    done: bool = False

    @property
    def length(self) -> int:
        return len(self.actions)


def end_words(env: BatchedEnv, info: Info, row: int, finished: bool) -> str:
    """Why step ``info`` ended row ``row``'s episode (or closed a case in it), in the env's words: its
    ``info["end_reason"]`` through ``env.describe_end``; without one, the step limit or ``terminated`` for a finished
    row, ``""`` for a running one."""
    if "end_reason" in info:
        reason = int(info["end_reason"][row])
        return env.describe_end(reason) if reason else ""
    if not finished:
        return ""
    return "out of steps (step limit)" if int(info["episode_length"][row]) >= env.max_episode_steps else "terminated"


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
        self._successor: tuple[list[int], EnvState] | None = None  # (trajectories stepped, their next states)

    def _live(self) -> list[int]:
        return [i for i, t in enumerate(self.trajectories) if not t.done]

    def _append_observation(self, row: int, image: Tensor, text: Tensor) -> None:
        trajectory = self.trajectories[row]
        trajectory.images.append(image.cpu().numpy())
        trajectory.texts.append(self.env.decode(text))

    def _truth(self, state: EnvState, row: int) -> str:
        """The env's hidden ground truth of row ``row`` of ``state``."""
        return self.env.describe_truth(select_rows(state, torch.tensor([row], device=self.env.device)))

    def wrap_act(self, act: ActFn) -> ActFn:
        """``act`` that also records each live recorded row's observation, hidden truth and action."""

        def recorded(obs: Observation, info: Info) -> Tensor:
            actions = act(obs, info)
            live = self._live()
            if live:
                taken = torch.as_tensor(actions).cpu()[self._index]
                rows = torch.as_tensor([self.row_ids[i] for i in live], device=self.env.device)
                # the states the step will leave (an episode's last one is gone once the step has reset the row)
                self._successor = (live, self.env.successor(rows, taken[live].to(self.env.device)))
                state = self.env.state
                for i in live:
                    row = self.row_ids[i]
                    self._append_observation(i, obs["image"][row], obs["text"][row])
                    self.trajectories[i].truths.append(self._truth(state, row) if state is not None else "")
                    self.trajectories[i].actions.append(int(taken[i]))
            return actions

        return recorded

    def wrap_update(self, update: UpdateFn | None) -> UpdateFn:
        """``update`` that also records rewards, running returns, end reasons and final observations (with the
        hidden truth of the episode's last state)."""

        def recorded(info: Info, done: Tensor) -> None:
            if update is not None:
                update(info, done)
            live = self._live()
            if not live:
                return
            returns = info["episode_return"].cpu()[self._index].numpy().astype(np.float64)
            finished = done.cpu()[self._index].numpy()
            done_rows = info["done_index"].cpu().tolist()
            assert self._successor is not None, "wrap_update's function runs after wrap_act's"
            stepped, successor = self._successor
            for i in live:
                trajectory = self.trajectories[i]
                trajectory.rewards.append(float(returns[i] - self._previous_return[i]))
                trajectory.returns.append(float(returns[i]))
                self._previous_return[i] = returns[i]
                trajectory.outcomes.append(end_words(self.env, info, self.row_ids[i], bool(finished[i])))
                if finished[i]:
                    j = done_rows.index(self.row_ids[i])
                    final = info["final_observation"]
                    self._append_observation(i, final["image"][j], final["text"][j])
                    trajectory.truths.append(self._truth(successor, stepped.index(i)))
                    trajectory.end = trajectory.outcomes[-1] or "terminated"
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


def hidden_lines(trajectory: Trajectory, t: int) -> list[str]:
    """What frame ``t`` tells the viewer and not the agent: the step's outcome (``ended: ...`` on the last frame of a
    finished episode), the hidden truth at the frame, and, where a step closed a case and the truth changed with it
    (Diagnose's next patient), the truth the action was taken on."""
    lines = []
    outcome = trajectory.outcomes[t - 1] if 0 < t <= len(trajectory.outcomes) else ""
    final = t == trajectory.length and trajectory.done
    if final:
        lines.append(f"ended: {trajectory.end}")
    elif outcome:
        lines.append(f"outcome: {outcome}")
    truth = trajectory.truths[t] if t < len(trajectory.truths) else ""
    if outcome and not final and t > 0 and trajectory.truths[t - 1] and trajectory.truths[t - 1] != truth:
        lines.append(f"truth when acting: {trajectory.truths[t - 1]}")
    if truth:
        lines.append(f"truth: {truth}")
    return lines


def replay_frame(
    env: BatchedEnv,
    trajectory: Trajectory,
    t: int,
    scale: int = 4,
    height: int | None = None,
) -> np.ndarray:
    """HWC uint8 frame ``t`` (``0 .. T``) of ``trajectory``: see the module docstring for the layout.

    :param height: the frame's height (at least what the picture and the panel need; a plain margin below the
        picture fills the rest), so all frames of a video have one size; ``None``: what this frame needs."""
    picture, lines = _frame_parts(env, trajectory, t, scale)
    return _compose_frame(picture, lines, height)


def _frame_parts(env: BatchedEnv, trajectory: Trajectory, t: int, scale: int) -> tuple[np.ndarray, list[PanelLine]]:
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
    lines: list[PanelLine] = [
        f'"{trajectory.texts[t]}"',
        f"step {t}/{env.max_episode_steps}{end}   seed {trajectory.seed}",
        action_line,
        reward_line,
    ]
    lines += [(line, TRUTH_COLOUR if line.startswith("truth") else END_COLOUR) for line in hidden_lines(trajectory, t)]
    return picture, lines


def _compose_frame(picture: np.ndarray, lines: list[PanelLine], height: int | None) -> np.ndarray:
    need = max(picture.shape[0], panel_height(lines), height or 0)
    margin = np.full((need - picture.shape[0], picture.shape[1], 3), 16, dtype=np.uint8)
    return compose(np.concatenate([picture, margin], axis=0), lines)


def poster_index(trajectory: Trajectory) -> int:
    """The frame a video shows before it plays: one from the middle of the episode (frame 0 has no picture on the
    left yet, and the last one may show the start of nothing)."""
    return max(1, len(trajectory.images) // 2) if len(trajectory.images) > 1 else 0


def step_rows(env: BatchedEnv, trajectory: Trajectory) -> list[dict[str, object]]:
    """The episode as a table, one row per frame: ``step``, the ``text`` seen, the ``action`` taken at that step (by
    the env's name for it), its ``reward``, the ``return`` so far (frame 0: the first observation, no action), the
    step's ``outcome`` (``ended: ...`` on the last row of a finished episode, ``""`` while it goes on) and the hidden
    ``truth`` at the frame, as the replay's panel shows them."""
    rows: list[dict[str, object]] = []
    for t, text in enumerate(trajectory.texts):
        row: dict[str, object] = {"step": t, "text": text, "action": None, "reward": None, "return": 0.0}
        if t > 0:
            row.update(action=describe_action(env, trajectory.actions[t - 1]), reward=round(trajectory.rewards[t - 1], 4),
                       **{"return": round(trajectory.returns[t - 1], 4)})  # fmt: skip
        if t == trajectory.length and trajectory.done:
            row["outcome"] = f"ended: {trajectory.end}"
        else:
            row["outcome"] = trajectory.outcomes[t - 1] if 0 < t <= len(trajectory.outcomes) else ""
        row["truth"] = trajectory.truths[t] if t < len(trajectory.truths) else ""
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
    """All ``T + 1`` frames of ``trajectory``, one size: as tall as the tallest panel needs."""
    parts = [_frame_parts(env, trajectory, t, scale) for t in range(len(trajectory.images))]
    height = max(max(picture.shape[0], panel_height(lines)) for picture, lines in parts)
    return [_compose_frame(picture, lines, height) for picture, lines in parts]


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
