"""Tutor: adaptive exercise recommendation, where what a student answers right now teaches them little (#18).

**Task.** A simulated student works toward a session goal (a skill of a small prerequisite graph) and says so.
Each step the agent is shown a slate of ``K`` candidate exercises as one image and assigns one slot; the student
answers it, right or wrong, may learn from it, forgets a little of what was not practised, and says where they
stand ("counting strong adding weak ...") and how it went ("too easy", "i do not get adding yet", "i am bored ,
maybe shapes ?"). Failures and boredom cost the student's patience; when it runs out they quit. The reward is what
the student learnt toward the goal.

**Skills** (:data:`SKILLS`, a prefix of ``num_skills`` of them; prerequisites in :data:`PREREQUISITES`)::

    counting -> adding -> fractions
        \\-> shapes -> areas   (areas needs adding and shapes)

The goal is drawn per episode among the skills that have prerequisites; its *path* is the goal and everything it
builds on (fractions: counting, adding, fractions). Rewards count the path only.

**Student model** (hidden; knowledge tracing with levels, prerequisites, forgetting and patience).

* Mastery: a level ``0..3`` per skill (3 = mastered), drawn at the start (counting 0-3, adding and shapes 0-1,
  the others 0). A skill is *ready* when each of its prerequisites is at level 2 or more.
* Exercise ``(skill s, difficulty d)``, ``d`` in 1-3, has the gap ``g = d - level[s]``, one more when ``s`` is not
  ready. P(right) by gap: ``g <= 0`` 0.95 (too easy), 1: 0.75 (the zone of proximal development), 2: 0.4,
  3: 0.15, 4: 0.05 (:data:`P_RIGHT`).
* Learning, only on a ready skill: level +1 with probability ``learn_rate x (0, 1, 0.5, 0.15)`` for gaps
  ``<= 0, 1, 2, 3``: easy exercises teach nothing, the zone teaches most, a stretch some.
* Forgetting: every step, each other skill above level 0 loses a level with probability ``forget_rate``
  (so a prerequisite can fall below 2 again and must be revisited).
* ``learn_rate`` and ``forget_rate`` are drawn per student, uniformly in ``[learn_rate_min, learn_rate_max]`` and
  ``[forget_rate_min, forget_rate_max]``.
* Patience starts at ``patience`` to ``patience + 2`` (and never exceeds that start + 2): +1 after a right answer
  to a not-too-easy exercise, -1 after a wrong answer, -1 after a too-easy one, and -1 more when the skill is the
  same as in the last ``boredom_streak - 1`` steps (boredom). At 0 the student quits.
* Self-assessment: the student rates each skill at the level it had after their last exercise on it (at the start:
  the placement, their true levels). Forgetting goes unnoticed until the skill is practised again, so the rating can
  lie above the truth; the levels themselves stay hidden.

**Why planning beats the myopic policy.** The myopic choice (``myopic``: the highest chance of a right answer now)
is an exercise at or below the student's level whenever the slate has one: it teaches nothing, bores them, and they
quit (it does no better than random; BENCHMARKS.md has the reference returns). Teaching needs the zone of proximal
development on a ready skill of the path, prerequisites first, varied enough not to bore, and revisits of what is
being forgotten: ``curriculum`` does the first part (one step at a time), ``planner`` (Monte-Carlo lookahead on the
true state over ``curriculum``) also trades boredom, risk of failure and forgetting ahead.

**Why it needs both modalities.** The image is the exercises, the text is the student. Only the image shows which
slot trains which skill at which difficulty (skill = a coloured symbol, difficulty = 1-3 pips); only the text tells
where the student stands (their rating of each skill, which fixes the difficulty that teaches and the skills that
are open), the goal (which decides which skills earn anything), the last exercise's skill and answer (what a
repeat would bore) and their remark (which prerequisite they lack, what was too easy, what they forgot or learnt).
An image-only agent sees the offer but not the student: it cannot tell an exercise that teaches from one that is
too easy or out of reach, and can guess the goal only from how often path skills turn up (each slot's skill comes
from the goal's path with probability ``path_share``, else from all skills, and every goal's slates show every
skill). A text-only agent knows the student but not which slot holds which exercise: its choice is a random slot.

**Action space.** ``Discrete(K)``: the slot to assign. Every slot holds an exercise (two may coincide), so
``action_masks()`` is all true.

**Observation space.** ``Dict(image=Box(0, 255, (3, S, S), uint8), text=TextSpace(V, L))``. The image is a grid of
the ``K`` slots, row by row (a square grid; cells past ``K`` are empty). Each cell shows the exercise's skill as a
symbol (counting red disc, adding blue plus, shapes green triangle, fractions yellow half-disc, areas purple square)
over 1-3 white pips of difficulty. The text is ``<standing> . <answer> . <remark> . <goal>``: the standing names
every skill of the graph in order with the student's rating (:data:`LEVEL_WORDS`: ``new`` 0, ``weak`` 1, ``fair`` 2,
``strong`` 3), the answer names the last exercise's skill ("adding : right", "oops , i got the shapes one wrong").

**Rewards** (``reward=``): ``mastery`` (default) the levels gained minus the levels forgotten on the goal's path
this step, divided by 3 (a fully learnt skill is worth 1); ``post_test`` (harder: sparse and delayed) 0 on every step
but the last (a quit or the step limit), where it is the post-test score, the path's mean level divided by 3 (0-1).

**Starting state.** Goal, levels, rates and patience as above; a first slate; the text greets and says the goal.

**Episode end.** Terminated when the student quits (``end_reason`` 1); truncated at ``max_steps`` (``end_reason`` 2).

**Info.** Of the decision (each step and reset): ``p_right`` float32[K] (the true chance of a right answer of each
slot: the ``myopic`` policy's value), ``slate_skill``/``slate_difficulty`` int64[K], ``level`` int64[num_skills],
``ready`` and ``path`` bool[num_skills], ``goal``, ``patience``. Of the step just taken: ``correct``, ``learned``,
``forgot`` (levels lost), ``too_easy``, ``mastery_gain`` (the mastery reward), ``post_test`` (the score on the last
step, else 0), ``quit`` and ``end_reason``.

**Arguments.** See :class:`TutorParams`.

**Version history.** v0 (#18). Before any release, v0's image also showed the student's record of attempts and its
text had no standing; a learner reached 46% of the random-to-planner gap with that observation (BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import IntEnum

import cv2
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from mmrl.core import rng
from mmrl.core.batched_env import BatchedEnv, EnvState, Info, Observation, PolicyFactory, select_rows
from mmrl.core.frames import compose, enlarge
from mmrl.core.params import build_params
from mmrl.core.planner import RolloutPlanner
from mmrl.core.renderer import SpriteRenderer
from mmrl.core.spaces import MAX_IMAGE_SIZE, TextSpace, Vocabulary, image_space
from mmrl.episodes import EpisodeStats
from mmrl.metrics import TaskMetrics, summarize

#: the skills, in a topological order of the prerequisite graph (a prefix of ``num_skills`` is used)
SKILLS = ("counting", "adding", "shapes", "fractions", "areas")
#: the prerequisites of each skill (lower indices only, so every prefix is closed)
PREREQUISITES = ((), (0,), (0,), (1,), (1, 2))
#: symbol colour of each skill
SKILL_RGB = ((225, 45, 45), (60, 110, 240), (45, 190, 70), (240, 215, 40), (165, 70, 215))
#: mastery levels 0..LEVELS (LEVELS = mastered); difficulties 1..LEVELS
LEVELS = 3
#: the level each prerequisite needs before a skill can be learnt
READY_LEVEL = 2
#: the highest starting level of each skill
START_LEVEL = (3, 1, 1, 0, 0)
#: P(right) by gap ``difficulty - level`` (+1 when not ready), clamped to [0, 4]
P_RIGHT = (0.95, 0.75, 0.4, 0.15, 0.05)
#: the chance of learning (times the student's learn rate) by gap, on a ready skill
LEARN_BY_GAP = (0.0, 1.0, 0.5, 0.15, 0.0)
#: the success rate the curriculum heuristic aims for (the zone of proximal development)
ZPD_TARGET = 0.65
REWARD_MODES = ("mastery", "post_test")
#: smallest cell (pixels) that shows a skill symbol above three separate pips
MIN_TILE = 10
#: how the student rates each level of a skill (0..LEVELS) when they say where they stand
LEVEL_WORDS = ("new", "weak", "fair", "strong")
#: tokens of the longest utterance (answer, remark and goal, with the two full stops)
LONGEST_UTTERANCE = 23


@dataclass(frozen=True)
class TutorParams:
    """Static parameters of Tutor (shapes, and the student model's constants)."""

    slate_size: int = 4
    """K, the candidate exercises per step (the action space is ``Discrete(K)``)."""
    num_skills: int = 5
    """Skills of the graph used (2-5, a prefix of :data:`SKILLS`)."""
    image_size: int = 48
    """Side of the square observation image in pixels."""
    max_steps: int = 40
    """Step limit of a session (truncation)."""
    max_text_length: int = 34
    """Length L of the padded token-id text observation (the standing takes ``2 * num_skills + 1`` tokens)."""
    reward: str = "mastery"
    """``mastery`` (levels gained on the goal's path, per step) or ``post_test`` (the path's mastery at the end)."""
    patience: int = 6
    """Initial patience is drawn from ``patience .. patience + 2``."""
    boredom_streak: int = 3
    """Exercises of one skill in a row from which each costs a point of patience more."""
    learn_rate_min: float = 0.35
    """Smallest per-student learn rate (drawn uniformly in [min, max])."""
    learn_rate_max: float = 0.85
    """Largest per-student learn rate."""
    forget_rate_min: float = 0.0
    """Smallest per-student chance per step that an unpractised skill loses a level."""
    forget_rate_max: float = 0.05
    """Largest per-student forget rate."""
    path_share: float = 0.5
    """Chance that a slot's skill is drawn from the goal's path (else from all skills)."""

    def __post_init__(self) -> None:
        if not 2 <= self.slate_size <= 8:
            raise ValueError(f"slate_size must be in [2, 8]; got {self.slate_size}")
        if not 2 <= self.num_skills <= len(SKILLS):
            raise ValueError(f"num_skills must be in [2, {len(SKILLS)}]; got {self.num_skills}")
        if not 8 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be in [8, {MAX_IMAGE_SIZE}]; got {self.image_size}")
        if self.tile < MIN_TILE:
            raise ValueError(
                f"image_size={self.image_size} with slate_size={self.slate_size} gives {self.tile}-pixel cells, too small "
                f"to show the skill symbol and the difficulty pips (at least {MIN_TILE} px): use image_size >= "
                f"{MIN_TILE * max(self.grid)}"
            )
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1; got {self.max_steps}")
        if self.max_text_length < self.min_text_length:
            raise ValueError(
                f"max_text_length must be >= {self.min_text_length} (the standing, {self.standing_length} tokens for "
                f"{self.num_skills} skills, then the longest utterance, {LONGEST_UTTERANCE}); got {self.max_text_length}"
            )
        if self.reward not in REWARD_MODES:
            raise ValueError(f"reward must be one of {list(REWARD_MODES)}; got {self.reward!r}")
        if not 1 <= self.patience <= 100:
            raise ValueError(f"patience must be in [1, 100]; got {self.patience}")
        if not 2 <= self.boredom_streak <= 100:
            raise ValueError(f"boredom_streak must be in [2, 100]; got {self.boredom_streak}")
        for name in ("learn_rate_min", "learn_rate_max", "forget_rate_min", "forget_rate_max", "path_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]; got {getattr(self, name)}")
        for low, high in (("learn_rate_min", "learn_rate_max"), ("forget_rate_min", "forget_rate_max")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} must be <= {high}; got {getattr(self, low)} > {getattr(self, high)}")

    @property
    def standing_length(self) -> int:
        """Tokens of the standing: each skill and its rating, then ``.``."""
        return 2 * self.num_skills + 1

    @property
    def min_text_length(self) -> int:
        """The fewest tokens that hold the standing and the longest utterance."""
        return self.standing_length + LONGEST_UTTERANCE

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the image: the K slots."""
        cells = self.slate_size
        cols = math.ceil(math.sqrt(cells))
        return math.ceil(cells / cols), cols

    @property
    def tile(self) -> int:
        """Cell side in pixels."""
        return self.image_size // max(self.grid)


class Answer(IntEnum):
    """The first part of the student's utterance: the answer to the last exercise."""

    START = 0
    RIGHT = 1
    WRONG = 2


class Remark(IntEnum):
    """What the student says about the last step (the first that applies, in this order after HELLO)."""

    HELLO = 0
    NOT_READY = 1  # names the missing prerequisite
    LEARNED = 2  # names the skill learnt
    TOO_EASY = 3
    BORED = 4  # names a skill they would rather do (any other skill: not advice)
    FORGOT = 5  # names a skill that lost a level this step
    TOO_HARD = 6
    OKAY = 7


ANSWERS = {
    Answer.START: ("hi", "hello", "hi there"),
    Answer.RIGHT: ("{last} : right", "yes , i got the {last} one", "{last} was correct"),
    Answer.WRONG: ("{last} : wrong", "oops , i got the {last} one wrong", "no , {last} was wrong"),
}
REMARKS = {
    Remark.HELLO: ("let us start", "ready when you are", "what do we do first"),
    Remark.NOT_READY: ("i do not get {skill} yet", "i am still lost with {skill}", "{skill} still confuses me"),
    Remark.LEARNED: ("i think i get {skill} now", "{skill} makes more sense now", "i am getting better at {skill}"),
    Remark.TOO_EASY: ("too easy", "boring , i know this", "that one was easy"),
    Remark.BORED: ("can we do {skill}", "i am bored , maybe {skill} ?", "let us do {skill} for a change"),
    Remark.FORGOT: ("i forgot some {skill}", "i do not remember {skill} well", "{skill} is slipping away"),
    Remark.TOO_HARD: ("that was too hard", "way too hard for me", "i could not follow that"),
    Remark.OKAY: ("ok", "hmm , next", "fine , what next"),
}
GOALS = ("goal : {goal}", "today i want to learn {goal}", "i need {goal} for my test")
PHRASINGS = 3
_PLACEHOLDERS = {"{skill}": -1, "{goal}": -2, "{last}": -3}


@dataclass
class TutorState(EnvState):
    """Batch-first state tensors, one device."""

    level: Tensor  # int64[B, S], mastery level of each skill (hidden)
    learn_rate: Tensor  # float32[B] (hidden)
    forget_rate: Tensor  # float32[B] (hidden)
    patience: Tensor  # int64[B] (hidden)
    patience_max: Tensor  # int64[B], the start + 2
    goal: Tensor  # int64[B], the session's goal skill
    last_skill: Tensor  # int64[B], skill of the last exercise (-1 at the start)
    last_difficulty: Tensor  # int64[B], its difficulty (0 at the start)
    assessed: Tensor  # int64[B, S], each skill's level as last assessed (the placement test, then its last exercise)
    streak: Tensor  # int64[B], exercises of last_skill in a row
    slate_skill: Tensor  # int64[B, K]
    slate_difficulty: Tensor  # int64[B, K], 1..LEVELS
    text: Tensor  # int64[B, L]
    last_correct: Tensor  # bool[B]
    last_reward: Tensor  # float32[B]


# ---------------------------------------------------------------------------- task metrics
def _task_metrics(stats: EpisodeStats) -> dict[str, object]:
    steps = float(stats.lengths.sum())
    return {
        "mastery_gained": summarize(stats.sums["mastery_gain"]),
        "post_test_score": summarize(stats.sums["post_test"]),
        "quit_rate": float((stats.sums["quit"] > 0).mean()),
        "right_answers_per_episode": summarize(stats.sums["correct"]),
        "right_answer_rate": float(stats.sums["correct"].sum() / steps),
        "too_easy_rate": float(stats.sums["too_easy"].sum() / steps),
        "levels_learned_per_episode": summarize(stats.sums["learned"]),
        "levels_forgotten_per_episode": summarize(stats.sums["forgot"]),
        "session_length": summarize(stats.lengths),
    }


TASK_METRICS = TaskMetrics(
    sum_keys=("mastery_gain", "post_test", "quit", "correct", "too_easy", "learned", "forgot"),
    compute=_task_metrics,
    labels={
        "mastery_gained": "mastery gained on the goal's path (skills' worth)",
        "post_test_score": "post-test score (the path's mean level / 3)",
        "quit_rate": "share of students who quit",
        "right_answers_per_episode": "right answers per session",
        "right_answer_rate": "right answers / steps",
        "too_easy_rate": "too-easy exercises / steps",
        "levels_learned_per_episode": "levels learnt per session (any skill)",
        "levels_forgotten_per_episode": "levels forgotten per session (any skill)",
        "session_length": "session length (steps)",
    },
)


# ---------------------------------------------------------------------------- sprites
def _symbol_mask(skill: int, tile: int) -> np.ndarray:
    """bool[T, T]: the skill's symbol in the cell's upper part (the pips take the bottom quarter)."""
    v, u = (np.mgrid[0:tile, 0:tile] + 0.5) / tile
    x, y = (u - 0.5) / 0.34, (v - 0.38) / 0.3  # symbol box: [-1, 1]^2
    if skill == 0:  # disc
        return x**2 + y**2 <= 1.0
    if skill == 1:  # plus
        return ((np.abs(x) <= 0.33) & (np.abs(y) <= 1.0)) | ((np.abs(y) <= 0.33) & (np.abs(x) <= 1.0))
    if skill == 2:  # triangle, point up
        return (y <= 1.0) & (np.abs(x) <= (y + 1.0) / 2.0)
    if skill == 3:  # half disc (a fraction)
        return (x**2 + y**2 <= 1.0) & (x <= 0.15)
    return (np.abs(x) <= 0.85) & (np.abs(y) <= 0.85)  # square (an area)


def tutor_atlas(tile: int) -> np.ndarray:
    """uint8[S * LEVELS + 1, 3, T, T]: exercise ``(skill, difficulty)`` at ``skill * LEVELS + difficulty - 1`` (the
    skill's symbol over 1-3 white pips of 3), then an empty cell."""
    v, u = (np.mgrid[0:tile, 0:tile] + 0.5) / tile
    edge = 1.0 / tile + 1e-9
    border = (u < edge) | (v < edge)  # a one-pixel grid line top and left separates the cells

    def cell(skill: int | None, difficulty: int) -> np.ndarray:
        sprite = np.full((3, tile, tile), 30, dtype=np.uint8)
        sprite[:, border] = 70
        if skill is not None:
            sprite[:, _symbol_mask(skill, tile)] = np.array(SKILL_RGB[skill], dtype=np.uint8)[:, None]
        for pip in range(LEVELS if difficulty else 0):
            x0 = 0.1 + 0.28 * pip
            box = (u >= x0) & (u <= x0 + 0.2) & (v >= 0.76) & (v <= 0.92)
            sprite[:, box] = 245 if pip < difficulty else 75
        return sprite

    return np.stack([*(cell(s, d) for s in range(len(SKILLS)) for d in range(1, LEVELS + 1)), cell(None, 0)])


# ---------------------------------------------------------------------------- the env
class Tutor(BatchedEnv[TutorState]):
    """Batched Tutor; see the module docstring for the task. Keyword arguments: :class:`TutorParams`."""

    end_reasons = ("running", "quit", "step limit")
    #: what the pictures show, for the replays' legend (mmrl.report)
    legend = (
        "The image is the slate, one cell per slot, left to right, top to bottom. Symbol = skill (counting red disc, "
        "adding blue plus, shapes green triangle, fractions yellow half-disc, areas purple square), white pips (1-3) = "
        "difficulty. The text is the student: how they rate each skill (new, weak, fair, strong), their last answer, a "
        "remark and the goal. Their true mastery is hidden (the replay's panel lists it; render() draws it as bars)."
    )
    observation_fields = ("slate_skill", "slate_difficulty", "text")
    value_key = "p_right"
    task_metrics = TASK_METRICS

    def __init__(self, num_envs: int = 1, device: torch.device | str = "cpu", **params: object):
        super().__init__(num_envs, device)
        self.params = build_params(TutorParams, params, env_name="Tutor")
        p, dev = self.params, self.device
        self.max_episode_steps = p.max_steps
        self.skills = SKILLS[: p.num_skills]
        phrases = [*sum(ANSWERS.values(), ()), *sum(REMARKS.values(), ()), *GOALS]
        words = [w for text in phrases for w in text.split() if w not in _PLACEHOLDERS]
        self.vocabulary = Vocabulary([*words, ".", *SKILLS, *LEVEL_WORDS])
        self.single_observation_space = spaces.Dict(
            {"image": image_space(p.image_size, p.image_size), "text": TextSpace(self.vocabulary, p.max_text_length)}
        )
        self.single_action_space = spaces.Discrete(p.slate_size)

        s = p.num_skills
        prerequisite = torch.zeros(s, s, dtype=torch.bool)
        for skill in range(s):
            for pre in PREREQUISITES[skill]:
                prerequisite[skill, pre] = True
        path = torch.eye(s, dtype=torch.bool)  # goal -> itself and every ancestor
        for skill in range(s):
            for pre in PREREQUISITES[skill]:
                path[skill] |= path[pre]
        self._prerequisite, self._path = prerequisite.to(dev), path.to(dev)
        self._goals = torch.tensor([g for g in range(s) if PREREQUISITES[g]], dtype=torch.int64, device=dev)
        self._start_level = torch.tensor(START_LEVEL[:s], dtype=torch.int64, device=dev)
        self._p_right = torch.tensor(P_RIGHT, dtype=torch.float32, device=dev)
        self._learn = torch.tensor(LEARN_BY_GAP, dtype=torch.float32, device=dev)
        self._skill_word = torch.tensor([self.vocabulary.id(w) for w in SKILLS], device=dev)
        self._level_word = torch.tensor([self.vocabulary.id(w) for w in LEVEL_WORDS], device=dev)
        self._dot = torch.tensor([self.vocabulary.id(".")], device=dev)
        self._text_table = self._build_text_table().to(dev)

        rows, cols = p.grid
        self.renderer = SpriteRenderer(torch.from_numpy(tutor_atlas(p.tile)), rows, cols, p.image_size).to(dev)
        empty = len(SKILLS) * LEVELS
        self._blank_cells = torch.full((1, rows * cols - p.slate_size), empty, dtype=torch.int64, device=dev)

        k = p.slate_size
        slate, text = rng.Block(3 * k), rng.Block(3)  # per slot: from the path?, which skill, which difficulty
        self._reset_draws = rng.Draws(
            goal=1, level=rng.Block(s), learn_rate=1, forget_rate=1, patience=1, slate=slate, text=text,
        )  # fmt: skip
        self._step_draws = rng.Draws(correct=1, learn=1, forget=rng.Block(s), wish=1, slate=slate, text=text)

    # ------------------------------------------------------------------ text
    def _build_text_table(self) -> Tensor:
        """int64[3 * P, R * P, P, L - 2S - 1]: every answer phrasing, remark phrasing and goal phrasing joined by
        ``.``, padded to what the standing leaves of L, with placeholders -1 (the remark's skill), -2 (the goal) and -3
        (the last exercise's skill)."""
        length = self.params.max_text_length - self.params.standing_length

        def ids(text: str) -> list[int]:
            return [_PLACEHOLDERS[w] if w in _PLACEHOLDERS else self.vocabulary.id(w) for w in text.split()]

        dot = [self.vocabulary.id(".")]
        table = []
        for answer in Answer:
            for a in ANSWERS[answer]:
                remarks = []
                for remark in Remark:
                    for r in REMARKS[remark]:
                        goals = []
                        for g in GOALS:
                            tokens = ids(a) + dot + ids(r) + dot + ids(g)
                            assert len(tokens) <= LONGEST_UTTERANCE, (a, r, g)  # LONGEST_UTTERANCE is kept up to date
                            goals.append(tokens + [0] * (length - len(tokens)))
                        remarks.append(goals)
                table.append(remarks)
        return torch.tensor(table, dtype=torch.int64)

    def _utterance(
        self, answer: Tensor, last: Tensor, remark: Tensor, named: Tensor, goal: Tensor, u: Tensor, assessed: Tensor
    ) -> Tensor:
        """int64[B, L]: the student's standing (each skill and how they rate it, then ``.``), then their words for
        ``answer`` (to an exercise on skill ``last``) and ``remark`` (naming skill ``named``) and the goal."""
        a = answer * PHRASINGS + rng.randint(u[:, 0], PHRASINGS)
        r = remark * PHRASINGS + rng.randint(u[:, 1], PHRASINGS)
        text = self._text_table[a, r, rng.randint(u[:, 2], PHRASINGS)]
        words = torch.stack([self._skill_word[named.clamp(min=0)], self._skill_word[goal], self._skill_word[last.clamp(min=0)]], dim=1)
        said = torch.where(text < 0, words.gather(1, (-1 - text).clamp(min=0)), text)
        batch = assessed.shape[0]
        standing = torch.stack([self._skill_word[: self.params.num_skills].expand(batch, -1), self._level_word[assessed]], dim=2)
        return torch.cat([standing.flatten(1), self._dot.expand(batch, 1), said], dim=1)

    # ------------------------------------------------------------------ student model
    def ready(self, level: Tensor) -> Tensor:
        """bool[B, S]: skills whose prerequisites are all at :data:`READY_LEVEL` or more."""
        missing = self._prerequisite[None] & (level < READY_LEVEL)[:, None, :]
        return ~missing.any(dim=2)

    def _gap(self, level: Tensor, ready: Tensor, skill: Tensor, difficulty: Tensor) -> Tensor:
        """int64[B, K]: the gap ``difficulty - level`` (+1 when not ready) of exercises ``(skill, difficulty)``, in [0, 4]."""
        gap = difficulty - level.gather(1, skill) + (~ready.gather(1, skill)).to(torch.int64)
        return gap.clamp(0, len(P_RIGHT) - 1)

    def _draw_slate(self, u: Tensor, goal: Tensor) -> tuple[Tensor, Tensor]:
        """``(skill, difficulty)`` int64[B, K]: each slot from the goal's path with probability ``path_share``
        (else from all skills), its difficulty uniform in 1..3. ``u``: the slate's 3K uniforms."""
        k, s = self.params.slate_size, self.params.num_skills
        from_path, which, hard = u[:, :k], u[:, k : 2 * k], u[:, 2 * k :]
        path = self._path[goal]  # [B, S]
        # the path's skills first (stable order), then pick one of the first |path|
        order = torch.sort((~path).to(torch.int64), dim=1, stable=True).indices
        on_path = order.gather(1, rng.randint(which, path.sum(dim=1)))
        anywhere = rng.randint(which, s)
        skill = torch.where(from_path < self.params.path_share, on_path, anywhere)
        return skill, 1 + rng.randint(hard, LEVELS)

    # ------------------------------------------------------------------ BatchedEnv
    def _initial_state(self, episode_key: Tensor) -> TutorState:
        p, d = self.params, self._reset_draws
        u = rng.uniform(episode_key, d.count)
        batch = episode_key.shape[0]
        goal = self._goals[rng.randint(u[:, d.goal], len(self._goals))]
        level = torch.minimum((u[:, d.level] * (self._start_level + 1)).to(torch.int64), self._start_level)
        learn_rate = p.learn_rate_min + (p.learn_rate_max - p.learn_rate_min) * u[:, d.learn_rate]
        forget_rate = p.forget_rate_min + (p.forget_rate_max - p.forget_rate_min) * u[:, d.forget_rate]
        patience = p.patience + rng.randint(u[:, d.patience], 3)
        skill, difficulty = self._draw_slate(u[:, d.slate], goal)
        zeros = torch.zeros(batch, dtype=torch.int64, device=self.device)
        text = self._utterance(zeros + Answer.START, zeros, zeros + Remark.HELLO, zeros, goal, u[:, d.text], level)
        return TutorState(
            elapsed=zeros, level=level, learn_rate=learn_rate, forget_rate=forget_rate, patience=patience,
            patience_max=patience + 2, goal=goal, last_skill=zeros - 1, last_difficulty=zeros.clone(), streak=zeros.clone(),
            assessed=level.clone(),
            slate_skill=skill, slate_difficulty=difficulty, text=text,
            last_correct=torch.zeros(batch, dtype=torch.bool, device=self.device),
            last_reward=torch.zeros(batch, dtype=torch.float32, device=self.device),
        )  # fmt: skip

    def _transition(self, state: TutorState, actions: Tensor, step_key: Tensor):
        p, d = self.params, self._step_draws
        u = rng.uniform(step_key, d.count)
        slot = actions[:, None]
        skill = state.slate_skill.gather(1, slot)  # [B, 1]
        difficulty = state.slate_difficulty.gather(1, slot)
        ready = self.ready(state.level)
        gap = self._gap(state.level, ready, skill, difficulty).squeeze(1)
        skill, difficulty = skill.squeeze(1), difficulty.squeeze(1)
        skill_ready = ready.gather(1, skill[:, None]).squeeze(1)
        correct = u[:, d.correct] < self._p_right[gap]
        too_easy = gap == 0
        learned = skill_ready & (u[:, d.learn] < self._learn[gap] * state.learn_rate)

        practised = torch.nn.functional.one_hot(skill, p.num_skills).bool()
        forgets = ~practised & (state.level > 0) & (u[:, d.forget] < state.forget_rate[:, None])
        level = state.level - forgets.to(torch.int64) + (practised & learned[:, None]).to(torch.int64)

        streak = torch.where(skill == state.last_skill, state.streak + 1, 1)
        bored = streak >= p.boredom_streak
        change = torch.where(too_easy | ~correct, -1, 1) - bored.to(torch.int64)
        patience = torch.minimum(state.patience + change, state.patience_max)
        quit = patience <= 0

        path = self._path[state.goal]
        gain = ((level - state.level) * path).sum(dim=1).to(torch.float32) / LEVELS
        final = quit | (state.elapsed + 1 >= self.max_episode_steps)
        score = (level * path).sum(dim=1).to(torch.float32) / (LEVELS * path.sum(dim=1))
        post_test = torch.where(final, score, 0.0)
        reward = gain if p.reward == "mastery" else post_test

        # what the student says: the first remark that applies, and the skill it names
        missing = self._prerequisite[skill] & (state.level < READY_LEVEL)
        first_missing = torch.where(missing, torch.arange(p.num_skills, device=self.device), p.num_skills).min(dim=1).values
        first_forgot = torch.where(forgets, torch.arange(p.num_skills, device=self.device), p.num_skills).min(dim=1).values
        wish = (skill + 1 + rng.randint(u[:, d.wish], p.num_skills - 1)) % p.num_skills
        remark = torch.full_like(skill, Remark.OKAY)
        named = skill.clone()
        for condition, said, name in reversed((
            (~skill_ready, Remark.NOT_READY, first_missing),
            (learned, Remark.LEARNED, skill),
            (too_easy, Remark.TOO_EASY, skill),
            (bored, Remark.BORED, wish),
            (forgets.any(dim=1), Remark.FORGOT, first_forgot),
            (~correct & (gap >= 2), Remark.TOO_HARD, skill),
        )):  # fmt: skip  (the first condition wins: applied last)
            remark = torch.where(condition, said, remark)
            named = torch.where(condition, name, named)
        answer = torch.where(correct, Answer.RIGHT, Answer.WRONG)
        slate_skill, slate_difficulty = self._draw_slate(u[:, d.slate], state.goal)
        assessed = torch.where(practised, level, state.assessed)
        text = self._utterance(answer, skill, remark, named, state.goal, u[:, d.text], assessed)
        next_state = dataclasses.replace(
            state, level=level, patience=patience, last_skill=skill, last_difficulty=difficulty, streak=streak,
            assessed=assessed,
            slate_skill=slate_skill, slate_difficulty=slate_difficulty, text=text, last_correct=correct,
            last_reward=reward.clone(),
        )  # fmt: skip
        info = {
            "correct": correct, "learned": learned, "forgot": forgets.sum(dim=1).to(torch.float32), "too_easy": too_easy,
            "mastery_gain": gain, "post_test": post_test, "quit": quit, "end_reason": quit.to(torch.int64),
        }  # fmt: skip
        return next_state, reward, quit, info

    def _observe(self, state: TutorState) -> dict[str, Tensor]:
        slots = state.slate_skill * LEVELS + state.slate_difficulty - 1
        cells = torch.cat([slots, self._blank_cells.expand(slots.shape[0], -1)], dim=1)
        return {"image": self.renderer.render(cells), "text": state.text.clone()}

    def _decision_info(self, state: TutorState) -> dict[str, Tensor]:
        ready = self.ready(state.level)
        gap = self._gap(state.level, ready, state.slate_skill, state.slate_difficulty)
        return {
            "p_right": self._p_right[gap], "slate_skill": state.slate_skill.clone(),
            "slate_difficulty": state.slate_difficulty.clone(), "level": state.level.clone(), "ready": ready,
            "path": self._path[state.goal], "goal": state.goal.clone(), "patience": state.patience.clone(),
        }  # fmt: skip

    def reference_policies(self) -> dict[str, PolicyFactory]:
        """``curriculum``: :class:`CurriculumTutor` (the zone of proximal development on the true state);
        ``planner``: :class:`~mmrl.core.planner.RolloutPlanner` over it (8 rollouts per slot to the step limit),
        the upper bound. ``myopic``/``oracle`` (generic) take the argmax of ``p_right``."""
        return {
            "curriculum": lambda seed: CurriculumTutor(),
            "planner": lambda seed: RolloutPlanner(self, base=CurriculumTutor.choose, rollouts=8),
        }

    def describe_action(self, action: int) -> str:
        return f"slot {action}"

    # ------------------------------------------------------------------ rendering
    def slot_box(self, slot: int, scale: int = 1) -> tuple[int, int, int, int]:
        """Pixel box ``(x0, y0, x1, y1)`` of ``slot`` in the observation image, times ``scale``."""
        rows, cols = self.params.grid
        tile = self.params.tile
        top = (self.params.image_size - rows * tile) // 2
        left = (self.params.image_size - cols * tile) // 2
        r, c = divmod(slot, cols)
        x0, y0 = left + c * tile, top + r * tile
        return x0 * scale, y0 * scale, (x0 + tile) * scale, (y0 + tile) * scale

    def render_frame(self, index: int = 0, scale: int = 4) -> np.ndarray:
        """The observation enlarged, the student's hidden mastery as bars below it (the goal's path marked), and
        the text panel beside them."""
        if self.state is None:
            raise RuntimeError("render() called before reset()")
        row = select_rows(self.state, torch.tensor([index], device=self.device))
        picture = enlarge(self._observe(row)["image"][0].cpu().numpy(), scale)
        width, line = picture.shape[1], 18
        bars = np.full((line * (len(self.skills) + 1) + 6, width, 3), 16, dtype=np.uint8)
        cv2.putText(bars, "mastery (hidden)", (6, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (200, 200, 200), 1, cv2.LINE_AA)
        path, goal = self._path[row.goal[0]].tolist(), int(row.goal[0])
        bar_x = min(width // 2, 96)
        for s, name in enumerate(self.skills):
            y = line * (s + 1) + 4
            label = name + (" (goal)" if s == goal else " *" if path[s] else "")
            cv2.putText(bars, label, (6, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (230, 230, 230), 1, cv2.LINE_AA)
            filled = int(row.level[0, s])
            segment = max(4, (width - bar_x - 8) // LEVELS)
            for k in range(LEVELS):
                colour = SKILL_RGB[s] if k < filled else (60, 60, 60)
                cv2.rectangle(bars, (bar_x + k * segment, y + 3), (bar_x + (k + 1) * segment - 3, y + 13), colour, -1)
        return compose(np.concatenate([picture, bars], axis=0), self._frame_lines(row, index))

    def describe_truth(self, state: TutorState) -> str:
        """The student's hidden mastery of each skill (the goal's path starred), patience and rates (one row)."""
        path, goal = self._path[state.goal[0]].tolist(), int(state.goal[0])
        levels = ", ".join(
            f"{name}{' (goal)' if s == goal else '*' if path[s] else ''} {int(state.level[0, s])}/{LEVELS}"
            for s, name in enumerate(self.skills)
        )
        return (
            f"mastery {levels}; patience {int(state.patience[0])}; "
            f"learn rate {float(state.learn_rate[0]):.2f}, forget rate {float(state.forget_rate[0]):.3f}"
        )

    def describe_end(self, reason: int) -> str:
        return "the student quit (patience ran out)" if self.end_reasons[reason] == "quit" else super().describe_end(reason)

    def _frame_lines(self, state: TutorState, index: int) -> list[str]:
        """Text panel: the utterance, step and return, the last exercise, and the hidden student."""
        last = int(state.last_skill[0])
        outcome = "right" if bool(state.last_correct[0]) else "wrong"
        return [
            f'"{self.decode(state.text[0])}"',
            f"step {int(state.elapsed[0])}/{self.max_episode_steps}   return {float(self.episode_return[index]):.2f}",
            "start of session" if last < 0 else
            f"last: {SKILLS[last]} difficulty {int(state.last_difficulty[0])}, {outcome}, reward {float(state.last_reward[0]):.2f}",
            f"truth: {self.describe_truth(state)}",
        ]  # fmt: skip


# ---------------------------------------------------------------------------- reference policies
class CurriculumTutor:
    """The zone of proximal development on the true state: on the first skill (in the graph's order) of the goal's
    path that is not mastered and whose prerequisites are ready, the exercise whose chance of a right answer is
    closest to :data:`ZPD_TARGET`; without one on the slate, the closest among the path's ready unmastered skills,
    else among all. The base policy of the planner."""

    @staticmethod
    def choose(info: Info) -> Tensor:
        level, ready, path = info["level"], info["ready"], info["path"]
        open_ = path & ready & (level < LEVELS)
        skills = torch.arange(level.shape[1], device=level.device)
        target = torch.where(open_, skills, level.shape[1]).min(dim=1).values  # S: none open
        skill = info["slate_skill"]
        useful = open_.gather(1, skill)
        score = 2.0 * (skill == target[:, None]) + 1.0 * useful - (info["p_right"] - ZPD_TARGET).abs()
        return score.argmax(dim=1)

    def act(self, obs: Observation, info: Info) -> Tensor:
        return self.choose(info)

    def update(self, info: Info, done: Tensor) -> None:
        pass
