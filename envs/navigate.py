"""Navigate: BabyAI-like instruction following in a grid room, where the agent must both read and see.

**Task.** A room of ``room_size x room_size`` free cells, walled all round, holds one target object
and ``num_distractors`` other objects. Objects have a kind (ball, box, key) and a colour (6 of
8 by default). The agent stands in a cell and faces one of four headings. The instruction says
what to do with which object: *go to* it ("go to the red ball", "walk up to the ball that is red")
or *pick it up* ("pick up the blue key", "grab the key that is blue").

**Why it needs both modalities.** Which object, and which verb, are only in the text; where the
objects are is only in the image. The first two distractors share the target's colour and its
kind respectively, so neither "the red thing" nor "the ball" finds the target: the policy must bind
both words to what it sees. The third completes the square: it has the second's colour and the
first's kind (a red ball, a red key, a blue ball, a blue key), so nothing in the image singles the
target out either. (Were every distractor to share an attribute with the target, the target would
be the one object sharing one with every other, and an image-only policy could find it.) Further
distractors share the target's colour or its kind, at random.

**Action space.** ``Discrete(5)``, :class:`Action`: 0 turn left, 1 turn right, 2 forward,
3 pick up, 4 done. ``forward`` into a wall or an object leaves the agent where it is.
``pick up`` and ``done`` act on the object in the cell the agent faces; facing no object they do
nothing (the step is spent). Facing an object, they end the episode:

* ``done`` facing the target, when the instruction is *go to*: success;
* ``pick up`` facing the target, when the instruction is *pick up*: success (the object is taken);
* anything else (a distractor, or the wrong verb for the target): failure.

**Action mask.** ``action_masks()`` (and ``info["action_mask"]`` on the Gymnasium, SB3 and TorchRL faces)
marks the actions that can change anything: the turns always, ``forward`` unless a wall or an object is
ahead, ``pick up`` and ``done`` only facing an object.

**Observation space.** ``Dict(image=Box(0, 255, (3, S, S), uint8), text=TextSpace(V, L))``: an
RGB view of the room (walls, floor, objects as coloured shapes, the agent as a white triangle pointing
where it faces), and the instruction as padded token ids (constant in an episode). ``view="top_down"``
shows the whole grid, north up; ``view="egocentric"`` shows a ``2 * room_size + 1``-cell square centred
on the agent and turned so that the agent faces up (what is ahead is above it; outside the grid is
wall), so the whole room is always in view and "forward" always means "up" in the image.

**Rewards.** ``1 - 0.9 * t / max_steps`` on success at step ``t`` (1-based, as BabyAI), else 0.

**Starting state.** The agent's cell, heading and the object cells are uniform and distinct; no object
lies in the cell the agent faces at the start (so no episode can end on its first action). Objects
are not placed around a path: in crowded rooms they can wall the target in (with the defaults this
did not happen in 1000 episodes; with ``room_size=5, num_distractors=10`` about a third of targets
are unreachable, see :func:`goal_distance`).
The instruction's verb is drawn by ``mission`` (``mixed``: go to or pick up, even odds), its phrasing
uniformly from three per verb.

**Episode end.** Terminated when ``pick up`` or ``done`` is used facing an object; truncated at
``max_steps``. ``info["end_reason"]`` indexes :attr:`Navigate.end_reasons`: running, success,
wrong object, wrong action (right object, wrong verb), step limit.

**Info.** About the returned observation: ``agent_position`` int64[2] (row, column in the image grid,
walls included), ``heading`` (0 east, 1 south, 2 west, 3 north), ``target_position`` int64[2],
``object_positions`` int64[K, 2] (slot 0 is the target), ``object_present`` bool[K], ``mission``
(0 go to, 1 pick up). About the step just taken: ``success``, ``end_reason``. The reference
planners :func:`plan_shortest_path` (BFS, the oracle) and :func:`plan_greedy` act on these entries.

**Arguments.** See :class:`NavigateParams`.

**Version history.** v0: first release (issue #7).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import torch
from gymnasium import spaces
from torch import Tensor

from mmrl.core import rng
from mmrl.core.batched_env import BatchedEnv, EnvState, Info, Observation, PolicyFactory
from mmrl.core.params import build_params
from mmrl.core.renderer import SpriteRenderer
from mmrl.core.spaces import MAX_IMAGE_SIZE, TextSpace, Vocabulary, image_space
from mmrl.envs.sprites import GRID_COLOURS, GRID_KINDS, grid_atlas
from mmrl.episodes import EpisodeStats
from mmrl.metrics import TaskMetrics, summarize

MISSIONS = ("goto", "pickup", "mixed")
VIEWS = ("top_down", "egocentric")


class Action(IntEnum):
    LEFT = 0
    RIGHT = 1
    FORWARD = 2
    PICKUP = 3
    DONE = 4


class Mission(IntEnum):
    GOTO = 0
    PICKUP = 1


class Sprite(IntEnum):
    """Atlas ids of the grid sprites (objects follow from ``OBJECT``, see :func:`grid_atlas`)."""

    FLOOR = 0
    WALL = 1
    AGENT = 2  # + heading
    OBJECT = 6  # + kind * num_colours + colour


class EndReason(IntEnum):
    RUNNING = 0
    SUCCESS = 1
    WRONG_OBJECT = 2
    WRONG_ACTION = 3
    STEP_LIMIT = 4


#: (row, column) step of each heading: east, south, west, north.
HEADING_STEPS = ((0, 1), (1, 0), (0, -1), (-1, 0))

# Three phrasings per verb; {colour} and {kind} are filled from the target.
INSTRUCTIONS = {
    Mission.GOTO: (
        "go to the {colour} {kind}",
        "walk up to the {kind} that is {colour}",
        "find the {colour} {kind} and stand facing it",
    ),
    Mission.PICKUP: (
        "pick up the {colour} {kind}",
        "grab the {kind} that is {colour}",
        "fetch the {colour} {kind} for me",
    ),
}
PHRASINGS = 3
_SLOTS = {"{colour}": -1, "{kind}": -2}


@dataclass(frozen=True)
class NavigateParams:
    """Static parameters of Navigate (anything that sets a shape, plus the task's difficulty)."""

    room_size: int = 6
    """Free cells per side of the room (the grid is ``room_size + 2`` with the walls)."""
    num_distractors: int = 3
    """Objects besides the target: the first three make a colour x kind square with it, more share its colour or kind."""
    num_colours: int = 6
    """Object colours in play (2-8); fewer make an easier task."""
    mission: str = "mixed"
    """``goto``, ``pickup`` or ``mixed`` (either, even odds per episode)."""
    view: str = "top_down"
    """``top_down``: the whole grid, north up; ``egocentric``: a window of ``2 * room_size + 1`` cells
    centred on the agent and turned so that it faces up (the whole room stays in view)."""
    image_size: int = 64
    """Side of the square observation image in pixels (at least 4 pixels per cell of the view)."""
    max_steps: int = 64
    """Step limit of an episode (truncation); also scales the success reward."""
    max_text_length: int = 12
    """Length L of the padded token-id instruction."""

    def __post_init__(self) -> None:
        if not 3 <= self.room_size <= 14:
            raise ValueError(f"room_size must be in [3, 14]; got {self.room_size}")
        most = self.room_size**2 - 3
        if not 0 <= self.num_distractors <= most:
            raise ValueError(
                f"num_distractors must be in [0, {most}] for room_size={self.room_size}; got {self.num_distractors}"
            )
        if not 2 <= self.num_colours <= len(GRID_COLOURS):
            raise ValueError(f"num_colours must be in [2, {len(GRID_COLOURS)}]; got {self.num_colours}")
        if self.mission not in MISSIONS:
            raise ValueError(f"mission must be one of {list(MISSIONS)}; got {self.mission!r}")
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {list(VIEWS)}; got {self.view!r}")
        if self.image_size > MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be <= {MAX_IMAGE_SIZE}; got {self.image_size}")
        if self.image_size < 4 * self.view_size:
            raise ValueError(
                f"image_size must be >= {4 * self.view_size} (4 pixels per cell of the {self.view_size}x{self.view_size} "
                f"{self.view} view); got {self.image_size}"
            )
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1; got {self.max_steps}")
        if self.max_text_length < 1:
            raise ValueError(f"max_text_length must be >= 1; got {self.max_text_length}")

    @property
    def grid_size(self) -> int:
        """Cells per side of the image grid, walls included."""
        return self.room_size + 2

    @property
    def view_size(self) -> int:
        """Cells per side of the observed view: the grid (top-down) or the agent-centred window (egocentric)."""
        return self.grid_size if self.view == "top_down" else 2 * self.room_size + 1

    @property
    def tile(self) -> int:
        """Sprite side in pixels."""
        return self.image_size // self.view_size

    @property
    def num_objects(self) -> int:
        return 1 + self.num_distractors


@dataclass
class NavigateState(EnvState):
    """Batch-first state tensors, one device. Object slot 0 is the target."""

    agent: Tensor  # int64[B, 2], (row, column) in the grid (walls at 0 and grid_size - 1)
    heading: Tensor  # int64[B], 0 east, 1 south, 2 west, 3 north
    objects: Tensor  # int64[B, K, 2], cells of the objects
    kind: Tensor  # int64[B, K]
    colour: Tensor  # int64[B, K]
    present: Tensor  # bool[B, K], false once picked up
    mission: Tensor  # int64[B], Mission
    text: Tensor  # int64[B, L]
    last_action: Tensor  # int64[B] (-1 at the start)
    last_reward: Tensor  # float32[B]
    end_reason: Tensor  # int64[B], EndReason of the last step


# ---------------------------------------------------------------------------- task metrics
def _task_metrics(stats: EpisodeStats) -> dict[str, object]:
    return {"success_rate": summarize(stats.sums["success"]), "episode_length": summarize(stats.lengths)}


TASK_METRICS = TaskMetrics(
    sum_keys=("success",),
    compute=_task_metrics,
    labels={"success_rate": "success rate (episodes that did what the instruction said)", "episode_length": "steps per episode"},
)


def _front_cells(agent: Tensor, heading: Tensor, steps: Tensor) -> Tensor:
    return agent + steps[heading]


def ahead(
    agent: Tensor, heading: Tensor, objects: Tensor, present: Tensor, room_size: int, steps: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """What lies in the cell the agent faces, batched: ``(front int64[B, 2], facing bool[B, K], in_room bool[B])``;
    ``facing`` marks the present object there (what ``pick up`` and ``done`` act on), ``in_room`` that the cell
    is not a wall."""
    front = _front_cells(agent, heading, steps)
    facing = present & (objects == front[:, None, :]).all(dim=2)
    in_room = ((front >= 1) & (front <= room_size)).all(dim=1)
    return front, facing, in_room


def move_rule(
    agent: Tensor, heading: Tensor, actions: Tensor, objects: Tensor, present: Tensor, room_size: int, steps: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The movement rule, batched: ``(agent, heading, facing)`` after ``actions``.

    ``facing`` bool[B, K] marks the present object (if any) in the cell the agent faced *before*
    the step (what ``pick up`` and ``done`` act on)."""
    front, facing, in_room = ahead(agent, heading, objects, present, room_size, steps)
    move = (actions == int(Action.FORWARD)) & in_room & ~facing.any(dim=1)
    agent = torch.where(move[:, None], front, agent)
    turn = torch.where(actions == int(Action.LEFT), 3, torch.where(actions == int(Action.RIGHT), 1, 0))
    return agent, (heading + turn) % 4, facing


class Navigate(BatchedEnv[NavigateState]):
    """Batched Navigate; see the module docstring for the task. Keyword arguments: :class:`NavigateParams`."""

    end_reasons = tuple(reason.name.lower().replace("_", " ") for reason in EndReason)
    #: what the pictures show, for the replays' legend (mmrl.report)
    legend = (
        "The image is the room: grey walls around a dark floor with grid lines; the agent is the white triangle, "
        "pointing where it faces; objects are coloured shapes (ball = disc, box = hollow square, key = ring with a "
        "shaft). In the egocentric "
        "view the agent sits in the centre facing up, so 'forward' is always up. The instruction names the target "
        "by kind and colour."
    )
    observation_fields = ("agent", "heading", "objects", "present", "colour", "kind", "text")
    task_metrics = TASK_METRICS
    action_names = tuple(a.name.lower().replace("pickup", "pick up") for a in Action)

    def __init__(self, num_envs: int = 1, device: torch.device | str = "cpu", **params: object):
        super().__init__(num_envs, device)
        self.params = build_params(NavigateParams, params, env_name="Navigate")
        p = self.params
        self.max_episode_steps = p.max_steps
        self.colours = GRID_COLOURS[: p.num_colours]
        self.kinds = GRID_KINDS
        words = [w for texts in INSTRUCTIONS.values() for t in texts for w in t.split() if w not in _SLOTS]
        self.vocabulary = Vocabulary([*words, *self.colours, *self.kinds])
        self.single_observation_space = spaces.Dict(
            {"image": image_space(p.image_size, p.image_size), "text": TextSpace(self.vocabulary, p.max_text_length)}
        )
        self.single_action_space = spaces.Discrete(len(Action))

        dev = self.device
        g = p.grid_size
        self._steps = torch.tensor(HEADING_STEPS, dtype=torch.int64, device=dev)
        self._text_table = self._build_text_table().to(dev)
        self._colour_word = torch.tensor([self.vocabulary.id(w) for w in self.colours], device=dev)
        self._kind_word = torch.tensor([self.vocabulary.id(w) for w in self.kinds], device=dev)
        v = p.view_size
        self.renderer = SpriteRenderer(torch.from_numpy(grid_atlas(p.tile, p.num_colours)), v, v, p.image_size).to(dev)
        # the empty room: walls all round, floor inside
        rows, cols = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
        wall = (rows == 0) | (rows == g - 1) | (cols == 0) | (cols == g - 1)
        self._room = torch.where(wall, int(Sprite.WALL), int(Sprite.FLOOR)).reshape(1, -1).to(dev)
        if p.view == "top_down":
            self._room_image = self.renderer.background(self._room)
        else:
            # egocentric: view cell (i, j) is (i - R, j - R) cells (ahead is up) from the agent; turned to
            # each heading, that is this (row, column) offset in the grid
            r = p.room_size
            ahead = torch.arange(v) - r
            up, right = torch.meshgrid(ahead, ahead, indexing="ij")
            offsets = {3: torch.stack([up, right], dim=-1)}
            for heading in (0, 1, 2):  # east: up -> east, right -> south; then on clockwise
                dr, dc = HEADING_STEPS[heading]
                # forward is (dr, dc); the agent's right is forward turned clockwise: (dc, -dr)
                offsets[heading] = torch.stack([-up * dr + right * dc, -up * dc - right * dr], dim=-1)
            self._view_offsets = torch.stack([offsets[h].reshape(-1, 2) for h in range(4)]).to(dev)  # [4, v*v, 2]
        n_cells = p.room_size**2
        self._cell_ids = torch.arange(n_cells, dtype=torch.int64, device=dev)
        k = p.num_distractors
        self._draws = rng.Draws(
            agent_cell=1, heading=1, target_colour=1, target_kind=1, mission=1, phrasing=1,
            share_colour=rng.Block(k), other=rng.Block(k), cell_scores=rng.Block(n_cells),
        )  # fmt: skip

    # ------------------------------------------------------------------ text
    def _build_text_table(self) -> Tensor:
        """int64[2 * PHRASINGS, L]: every instruction phrasing, padded, with negative placeholders
        where the target's colour (-1) and kind (-2) go."""
        length = self.params.max_text_length
        table = []
        for mission in Mission:
            for text in INSTRUCTIONS[mission]:
                tokens = [_SLOTS[w] if w in _SLOTS else self.vocabulary.id(w) for w in text.split()]
                if len(tokens) > length:
                    raise ValueError(f"max_text_length={length} is too short for {text!r} ({len(tokens)} tokens)")
                table.append(tokens + [0] * (length - len(tokens)))
        return torch.tensor(table, dtype=torch.int64)

    def _instruction(self, mission: Tensor, phrasing: Tensor, colour: Tensor, kind: Tensor) -> Tensor:
        text = self._text_table[mission * PHRASINGS + phrasing]
        words = torch.stack([self._colour_word[colour], self._kind_word[kind]], dim=1)
        return torch.where(text < 0, words.gather(1, (-1 - text).clamp(min=0)), text)

    # ------------------------------------------------------------------ BatchedEnv
    def _initial_state(self, episode_key: Tensor) -> NavigateState:
        p = self.params
        dev = self.device
        k = p.num_distractors
        r = p.room_size
        d = self._draws
        u = rng.uniform(episode_key, d.count)
        batch = episode_key.shape[0]

        agent_cell = rng.randint(u[:, d.agent_cell], r * r)
        agent = torch.stack([agent_cell // r, agent_cell % r], dim=1) + 1
        heading = rng.randint(u[:, d.heading], 4)
        front = _front_cells(agent, heading, self._steps)
        front_in_room = ((front >= 1) & (front <= r)).all(dim=1)
        front_cell = torch.where(front_in_room, (front[:, 0] - 1) * r + (front[:, 1] - 1), agent_cell)
        # object cells: the K lowest of unique per-cell scores, never the agent's cell or the one it faces
        scores = (u[:, d.cell_scores] * (1 << 24)).to(torch.int64) * (r * r) + self._cell_ids
        taken = (self._cell_ids == agent_cell[:, None]) | (self._cell_ids == front_cell[:, None])
        scores = torch.where(taken, torch.iinfo(torch.int64).max, scores)
        cells = scores.topk(1 + k, dim=1, largest=False, sorted=True).indices
        objects = torch.stack([cells // r, cells % r], dim=2) + 1

        n_col, n_kind = p.num_colours, len(self.kinds)
        target_colour = rng.randint(u[:, d.target_colour], n_col)
        target_kind = rng.randint(u[:, d.target_kind], n_kind)
        if p.mission == "mixed":
            mission = rng.randint(u[:, d.mission], 2)
        else:
            mission = torch.full((batch,), int(Mission.GOTO if p.mission == "goto" else Mission.PICKUP), device=dev)
        # distractor 1 shares the colour, 2 the kind, 3 completes the colour x kind square (the colour
        # of 2, the kind of 1), and any further one shares the colour or the kind by chance
        share_colour = u[:, d.share_colour] < 0.5
        if k >= 1:
            share_colour[:, 0] = True
        if k >= 2:
            share_colour[:, 1] = False
        other = u[:, d.other]
        other_colour = (target_colour[:, None] + 1 + rng.randint(other, n_col - 1)) % n_col
        other_kind = (target_kind[:, None] + 1 + rng.randint(other, n_kind - 1)) % n_kind
        colour = torch.where(share_colour, target_colour[:, None], other_colour)
        kind = torch.where(share_colour, other_kind, target_kind[:, None])
        if k >= 3:
            colour = torch.cat([colour[:, :2], colour[:, 1:2], colour[:, 3:]], dim=1)
            kind = torch.cat([kind[:, :2], kind[:, :1], kind[:, 3:]], dim=1)
        colour = torch.cat([target_colour[:, None], colour], dim=1)
        kind = torch.cat([target_kind[:, None], kind], dim=1)

        text = self._instruction(mission, rng.randint(u[:, d.phrasing], PHRASINGS), target_colour, target_kind)
        zeros = torch.zeros(batch, dtype=torch.int64, device=dev)
        return NavigateState(
            elapsed=zeros,
            agent=agent,
            heading=heading,
            objects=objects,
            kind=kind,
            colour=colour,
            present=torch.ones(batch, 1 + k, dtype=torch.bool, device=dev),
            mission=mission,
            text=text,
            last_action=zeros - 1,
            last_reward=torch.zeros(batch, dtype=torch.float32, device=dev),
            end_reason=zeros,
        )

    def _transition(self, state: NavigateState, actions: Tensor, step_key: Tensor):
        p = self.params
        agent, heading, facing = move_rule(
            state.agent, state.heading, actions, state.objects, state.present, p.room_size, self._steps
        )
        commits = (actions == int(Action.PICKUP)) | (actions == int(Action.DONE))
        acted = commits & facing.any(dim=1)
        on_target = facing[:, 0]
        right_verb = torch.where(state.mission == int(Mission.PICKUP), actions == int(Action.PICKUP), actions == int(Action.DONE))
        success = acted & on_target & right_verb
        picked = facing & (acted & (actions == int(Action.PICKUP)))[:, None]
        t = state.elapsed + 1
        reward = torch.where(success, 1.0 - 0.9 * t.to(torch.float32) / p.max_steps, 0.0)
        end_reason = torch.where(  # (the engine marks the step limit)
            success,
            int(EndReason.SUCCESS),
            torch.where(acted & ~on_target, int(EndReason.WRONG_OBJECT), torch.where(acted, int(EndReason.WRONG_ACTION), 0)),
        )
        next_state = dataclasses.replace(
            state,
            agent=agent,
            heading=heading,
            present=state.present & ~picked,
            last_action=actions.clone(),
            last_reward=reward.clone(),  # autoreset writes fresh rows into the state in place
            end_reason=end_reason.clone(),
        )
        return next_state, reward, acted, {"success": success, "end_reason": end_reason}

    def _action_mask(self, state: NavigateState) -> Tensor:
        """bool[B, 5]: turning always; ``forward`` unless a wall or an object blocks it; ``pick up`` and ``done``
        only facing an object (elsewhere each of these spends a step and changes nothing)."""
        _, facing, in_room = ahead(state.agent, state.heading, state.objects, state.present, self.params.room_size, self._steps)
        facing_object = facing.any(dim=1)
        turn = torch.ones_like(facing_object)
        by_action = {Action.LEFT: turn, Action.RIGHT: turn, Action.FORWARD: in_room & ~facing_object,
                     Action.PICKUP: facing_object, Action.DONE: facing_object}  # fmt: skip
        return torch.stack([by_action[action] for action in Action], dim=1)

    def _observe(self, state: NavigateState) -> dict[str, Tensor]:
        g = self.params.grid_size
        batch = state.agent.shape[0]
        objects = torch.where(state.present, state.objects[:, :, 0] * g + state.objects[:, :, 1], -1)
        cells = torch.cat([objects, (state.agent[:, 0] * g + state.agent[:, 1])[:, None]], dim=1)
        object_sprites = Sprite.OBJECT + state.kind * self.params.num_colours + state.colour
        if self.params.view == "egocentric":
            return {"image": self._egocentric_view(state, objects, object_sprites), "text": state.text.clone()}
        # the empty room is the same in every row: copy it, then paste the objects and the agent
        sprites = torch.cat([object_sprites, (Sprite.AGENT + state.heading)[:, None]], dim=1)
        background = self._room_image.expand(batch, -1, -1, -1).clone(memory_format=torch.contiguous_format)
        images = self.renderer.paste(background, cells, sprites)
        return {"image": images, "text": state.text.clone()}

    def _egocentric_view(self, state: NavigateState, objects: Tensor, object_sprites: Tensor) -> Tensor:
        """The agent-centred window, turned so the agent faces up: the grid's sprite ids gathered through
        the heading's offsets (outside the grid: wall), then rendered."""
        g = self.params.grid_size
        batch = state.agent.shape[0]
        grid = self._room.expand(batch, -1).clone()
        # absent objects go to a spare column that is dropped
        grid = torch.cat([grid, grid[:, :1]], dim=1).scatter_(1, torch.where(objects >= 0, objects, g * g), object_sprites)
        grid[:, g * g] = int(Sprite.WALL)
        agent_cell = state.agent[:, 0] * g + state.agent[:, 1]
        grid.scatter_(1, agent_cell[:, None], torch.full_like(agent_cell[:, None], Sprite.AGENT + 3))  # facing up
        seen = state.agent[:, None, :] + self._view_offsets[state.heading]  # [B, v*v, 2]
        inside = ((seen >= 0) & (seen < g)).all(dim=2)
        index = torch.where(inside, seen[:, :, 0] * g + seen[:, :, 1], g * g)
        return self.renderer.render(grid.gather(1, index))

    def _decision_info(self, state: NavigateState) -> dict[str, Tensor]:
        return {
            "agent_position": state.agent.clone(),
            "heading": state.heading.clone(),
            "target_position": state.objects[:, 0].clone(),
            "object_positions": state.objects.clone(),
            "object_present": state.present.clone(),
            "mission": state.mission.clone(),
        }

    def reference_policies(self) -> dict[str, PolicyFactory]:
        """``oracle``: :func:`plan_shortest_path` on the true state; ``greedy``: :func:`plan_greedy`."""
        size = self.params.grid_size
        return {"oracle": lambda seed: Planner(plan_shortest_path, size), "greedy": lambda seed: Planner(plan_greedy, size)}

    # ------------------------------------------------------------------ rendering
    def describe_truth(self, state: NavigateState) -> str:
        """The mission's verb and target of one row: what the instruction means, and the target's cell (row, column
        of the grid, walls included; the object the image shows in that colour and kind)."""
        verb = "pick up" if int(state.mission[0]) == Mission.PICKUP else "go to"
        row, column = state.objects[0, 0].tolist()
        return f"{verb} the {self.colours[int(state.colour[0, 0])]} {self.kinds[int(state.kind[0, 0])]} (grid row {row}, column {column})"

    def describe_end(self, reason: int) -> str:
        """``success`` and the two failures in words (the step limit as the base says it)."""
        words: dict[int, str] = {
            EndReason.SUCCESS: "success (did as instructed)",
            EndReason.WRONG_OBJECT: "wrong object (a distractor)",
            EndReason.WRONG_ACTION: "wrong action (right object, wrong verb)",
        }
        return words.get(reason, super().describe_end(reason))  # IntEnum keys: an int finds its member

    def _frame_lines(self, state: NavigateState, index: int) -> list[str]:
        """Text panel of the replay frame: the instruction, the step and return, the last action, the target."""
        last = int(state.last_action[0])
        end = int(state.end_reason[0])
        lines = [
            f'"{self.decode(state.text[0])}"',
            f"step {int(state.elapsed[0])}/{self.max_episode_steps}   return {float(self.episode_return[index]):.2f}",
            "start of episode" if last < 0 else f"last: {self.action_names[last]}, reward {float(state.last_reward[0]):.2f}"
            + ("" if end == 0 else f" ({self.describe_end(end)})"),
            f"target: {self.describe_truth(state)}",
        ]
        return lines


# ---------------------------------------------------------------------------- reference planners
def _turn_towards(heading: Tensor, direction: Tensor) -> Tensor:
    """Action that turns from ``heading`` towards ``direction`` (forward when they agree)."""
    diff = (direction - heading) % 4
    return torch.where(diff == 0, int(Action.FORWARD), torch.where(diff == 3, int(Action.LEFT), int(Action.RIGHT)))


_TURN_COST = (0, 1, 2, 1)


def _face_or_commit(info: dict[str, Tensor], steps: Tensor) -> tuple[Tensor, Tensor]:
    """For agents next to the target: ``(adjacent bool[B], action int64[B])`` — turn to face it, then
    say done or pick it up as the mission asks."""
    delta = info["target_position"] - info["agent_position"]
    adjacent = delta.abs().sum(dim=1) == 1
    direction = (delta[:, None, :] == steps[None]).all(dim=2).to(torch.int64).argmax(dim=1)
    commit = torch.where(info["mission"] == Mission.PICKUP, int(Action.PICKUP), int(Action.DONE))
    turn = _turn_towards(info["heading"], direction)
    return adjacent, torch.where(turn == Action.FORWARD, commit, turn)


def _free_cells(info: dict[str, Tensor], grid_size: int) -> Tensor:
    """bool[B, G, G]: room cells without a present object."""
    batch = info["heading"].shape[0]
    device = info["heading"].device
    free = torch.zeros(batch, grid_size, grid_size, dtype=torch.bool, device=device)
    free[:, 1:-1, 1:-1] = True
    flat = free.view(batch, -1)
    cells = info["object_positions"][:, :, 0] * grid_size + info["object_positions"][:, :, 1]
    occupied = torch.zeros_like(flat).scatter_(1, cells, info["object_present"])
    return (flat & ~occupied).view(batch, grid_size, grid_size)


def _best_direction(good: Tensor, heading: Tensor) -> Tensor:
    """Among the ``good`` bool[B, 4] directions, the one needing the fewest turns from ``heading``."""
    cost = torch.tensor(_TURN_COST, device=heading.device)[(torch.arange(4, device=heading.device) - heading[:, None]) % 4]
    return torch.where(good, cost, 99).argmin(dim=1)


def goal_distance(info: dict[str, Tensor], grid_size: int) -> Tensor:
    """int64[B, G, G]: steps (moves, not turns) from each cell to the nearest free cell next to the
    target, by BFS over free cells; ``G * G + 1`` where it cannot be reached."""
    free = _free_cells(info, grid_size)
    batch = free.shape[0]
    big = grid_size * grid_size + 1
    target = info["target_position"]
    goal = torch.zeros_like(free)
    rows = torch.arange(batch, device=free.device)
    for dr, dc in HEADING_STEPS:
        goal[rows, target[:, 0] + dr, target[:, 1] + dc] = True
    dist = torch.where(goal & free, 0, big)
    for _ in range(grid_size * grid_size):
        padded = torch.nn.functional.pad(dist, (1, 1, 1, 1), value=big)
        near = torch.stack(
            [padded[:, 1 + dr : 1 + dr + grid_size, 1 + dc : 1 + dc + grid_size] for dr, dc in HEADING_STEPS]
        ).amin(dim=0)
        new = torch.where(free, torch.minimum(dist, near + 1), big)
        if torch.equal(new, dist):
            break
        dist = new
    return dist


def plan_shortest_path(info: dict[str, Tensor], grid_size: int) -> Tensor:
    """The oracle: int64[B] actions along a shortest path (BFS over free cells) to a cell next to the
    target, then face it and say done / pick it up. Uses the true state in ``info``."""
    steps = torch.tensor(HEADING_STEPS, device=info["heading"].device)
    dist = goal_distance(info, grid_size)
    big = grid_size * grid_size + 1
    rows = torch.arange(dist.shape[0], device=dist.device)
    agent = info["agent_position"]
    here = dist[rows, agent[:, 0], agent[:, 1]]
    around = torch.stack([dist[rows, agent[:, 0] + dr, agent[:, 1] + dc] for dr, dc in HEADING_STEPS], dim=1)
    move = _turn_towards(info["heading"], _best_direction(around == (here - 1)[:, None], info["heading"]))
    adjacent, finish = _face_or_commit(info, steps)
    stuck = here >= big  # the target cannot be reached: turn on the spot
    return torch.where(adjacent, finish, torch.where(stuck, int(Action.LEFT), move))


def plan_greedy(info: dict[str, Tensor], grid_size: int) -> Tensor:
    """A myopic planner: int64[B] actions that step to a free neighbour closer (Manhattan) to the target,
    else any free neighbour; next to the target, face it and say done / pick it up. No path search, so
    it can dither behind obstacles."""
    steps = torch.tensor(HEADING_STEPS, device=info["heading"].device)
    free = _free_cells(info, grid_size)
    rows = torch.arange(free.shape[0], device=free.device)
    agent, target = info["agent_position"], info["target_position"]
    neighbours = agent[:, None, :] + steps[None]  # [B, 4, 2]
    open_ = free[rows[:, None], neighbours[..., 0], neighbours[..., 1]]
    closer = ((target[:, None, :] - neighbours).abs().sum(2) < (target - agent).abs().sum(1)[:, None]) & open_
    good = torch.where(closer.any(dim=1, keepdim=True), closer, open_)
    move = _turn_towards(info["heading"], _best_direction(good, info["heading"]))
    adjacent, finish = _face_or_commit(info, steps)
    return torch.where(adjacent, finish, move)


class Planner:
    """A reference policy that plans each step from the true positions in ``info``: ``plan(info, grid_size)``
    is :func:`plan_shortest_path` (the oracle) or :func:`plan_greedy`."""

    def __init__(self, plan: Callable[[dict[str, Tensor], int], Tensor], grid_size: int):
        self.plan, self.grid_size = plan, grid_size

    def act(self, obs: Observation, info: Info) -> Tensor:
        return self.plan(info, self.grid_size)

    def update(self, info: Info, done: Tensor) -> None:
        pass
