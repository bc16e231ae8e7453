"""Recommend: retail recommendation where the agent must both see the items and read the user.

**Task.** A simulated shopper wants an item (a category, a colour, a price limit) and says so in
words. Each step the agent is shown a slate of ``K`` candidate items as one image, in a shuffled
order, and recommends one slot. The shopper clicks with a probability that grows with how well the
item matches their wish, buys some clicked items they can afford, and answers in words ("too
pricey", "not my colour", "love it ! something like that but in green"). Bad suggestions cost
patience; the session ends when patience runs out.

**Why it needs both modalities.** The wish is only in the text; what the items are and what they
cost is only in the image (shape = category, fill = colour, texture = pattern, pips = price tier).
Every slate holds the wished category and colour *and* a decoy category and colour in a balanced
2x2 design, so the image alone cannot tell the wish from the decoy, and the text alone cannot tell
which slot holds it.

**Action space.** ``Discrete(K)``: the slot to recommend. Every slot holds an item, so ``action_masks()``
(and ``info["action_mask"]`` on the Gymnasium, SB3 and TorchRL faces) is all true.

**Observation space.** ``Dict(image=Box(0, 255, (3, S, S), uint8), text=TextSpace(V, L))``: the slate
(a grid of thumbnails, each with 1-4 price pips on top) and the shopper's utterance (feedback on the
last suggestion, then the current wish) as padded token ids.

**Rewards** (``reward=``): ``click`` 1 per click (default); ``revenue`` price/100 per purchase;
``satisfaction`` +1 per click, -0.5 per rejected suggestion, -2 when the shopper leaves.

**User model** (hidden). Wish: category, colour, budget tier (0-3), and a liked pattern that is never
said. Click probability ``sigmoid(0.75 * (a - 7))`` of an integer affinity ``a = 6 [category]
+ 4 [colour] + 2 [pattern] - 8 [over budget] - fatigue [same category as the last click]``.
Interest drifts with what is consumed: after a click the wish moves to another colour (``drift_colour``)
or, after ``fatigue_limit`` clicks in one category or by chance (``drift_category``), to another category.
Patience starts at ``patience`` to ``patience + 2``, drops by 1 per rejected suggestion and regains 1
per click (up to ``patience + 2``).

**Long-term setting** (``env=recommend_long``; off by default, where the task is a contextual bandit and
the myopic policy is optimal). Three mechanisms of RecSim, KuaiSim and SARDINE's kind, each perceivable:

* *clickbait vs genuine* (``clickbait_appeal``): every item has a clickbait twin, the same item with a flash
  badge in its thumbnail's corner, ``clickbait_appeal`` affinity points more appealing: clicked more often now,
  then disappointing ("it looked better in the picture"). Each slate shows the 2x2 wish/decoy design twice, once
  genuine and once clickbait, in shuffled slots, so the wished item is always on offer both ways.
* *trust* (``trust_levels``, ``trust_weight``, ``betrayal``): a hidden trust level, from 0 to ``trust_levels``,
  starts in the middle, rises by 1 per genuine click and falls by ``betrayal`` per clickbait click; every level
  below the start takes ``trust_weight`` affinity points from every later item (a wary shopper clicks less), while
  trust above the start shows only in return visits, so a trusted shopper still wants what they asked for. Every
  utterance opens with the shopper's mood (``upset`` ... ``thrilled``: trust in five steps), as a tone of voice shows
  how a customer feels: the cost of a clickbait click is heard at once, not only when the visit ends.
* *retention* (``sessions``, ``session_steps``): an episode spans up to ``sessions`` visits of ``session_steps``
  steps; when a visit ends (or patience runs out) the shopper comes back with probability
  ``trust / trust_levels``, with a new wish, fresh patience and a greeting that shows their trust ("back again !
  your picks were great" or "back , hope you do better this time"); the episode ends when they do not come back.

The myopic policy (``myopic``: the best expected reward now) picks the clickbait twin of the wished item and
loses the shopper's trust and return visits; ``careful`` (the best genuine item) and ``planner`` (Monte-Carlo
lookahead on the true state, :class:`~mmrl.core.planner.RolloutPlanner`) keep them. Both modalities stay
necessary: the wish is only in the text, the items and their badges only in the image.

**Episode end.** Terminated when patience reaches 0 (the shopper leaves; in the long-term setting, when a visit
ends and the shopper does not come back); truncated at ``max_steps``.

**Info.** ``affinity`` float32[K] (true click probability of each slot of the returned slate),
``expected_reward`` float32[K], ``item_ids`` int64[K] (with clickbait also ``clickbait`` bool[K]; in the
long-term setting ``trust`` and ``session``); about the step just taken: ``clicked``, ``purchased``,
``revenue``, ``chosen_item``, ``regret`` (best minus chosen expected reward), ``clickbait_click``,
``returned`` (a visit ended and the shopper came back) and ``end_reason`` (0 running, 1 shopper left,
2 step limit).

**Arguments.** See :class:`RecommendParams`.

**Version history.** v0: first release; the long-term setting's options (off by default: the
short-term task's episodes and vocabulary are unchanged); in the long-term setting, trust above the start no longer
adds clicks, and the utterance opens with the shopper's mood (issue #14: the wish had stopped mattering to a
trusted shopper, and the cost of clickbait was hidden until the visit ended).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from mmrl.core import rng
from mmrl.core.batched_env import BatchedEnv, EnvState, Info, Observation, PolicyFactory
from mmrl.core.params import build_params
from mmrl.core.planner import RolloutPlanner
from mmrl.core.renderer import SpriteRenderer
from mmrl.core.spaces import MAX_IMAGE_SIZE, TextSpace, Vocabulary, image_space
from mmrl.envs.catalog import TIER_BOUNDS, Catalog, load_catalog, procedural_catalog
from mmrl.episodes import EpisodeStats
from mmrl.metrics import TaskMetrics, summarize

REWARD_MODES = ("click", "revenue", "satisfaction")
#: smallest thumbnail (pixels) that shows 4 price pips, the pattern's texture and the clickbait badge
MIN_TILE = 12


@dataclass(frozen=True)
class RecommendParams:
    """Static parameters of Recommend (anything that sets a shape, plus the user model's constants)."""

    slate_size: int = 4
    """K, the number of candidate items shown per step (the action space is ``Discrete(K)``)."""
    image_size: int = 64
    """Side of the square observation image in pixels."""
    max_steps: int = 30
    """Step limit of a session (truncation)."""
    max_text_length: int = 24
    """Length L of the padded token-id text observation."""
    reward: str = "click"
    """``click``, ``revenue`` or ``satisfaction``."""
    patience: int = 3
    """Initial patience is drawn from ``patience .. patience + 2``."""
    drift_colour: float = 0.3
    """Chance that a click moves the wish to another colour."""
    drift_category: float = 0.15
    """Chance that a click moves the wish to another category."""
    fatigue_limit: int = 3
    """Clicks in one category after which the wish moves to another category."""
    purchase_prob: float = 0.6
    """Chance that a clicked, affordable item is bought."""
    num_categories: int = 8
    """Categories in the procedural catalogue (2-8); fewer make an easier task."""
    num_colours: int = 8
    """Colours in the procedural catalogue (2-8); fewer make an easier task."""
    catalog: str | None = None
    """Folder of a catalogue on disk (``items.csv`` + images); ``None`` = the procedural catalogue."""
    catalog_seed: int = 0
    """Seed of the procedural catalogue's prices."""
    clickbait_appeal: int = 0
    """Long-term setting: affinity bonus of clickbait items (flashy thumbnails, a flash badge, that get clicks
    now and disappoint). Above 0, every item has a clickbait twin and each slate shows the 2x2 wish/decoy design
    once genuine and once clickbait; 0: no clickbait items (the short-term task)."""
    trust_levels: int = 0
    """Long-term setting: the shopper's trust runs from 0 to ``trust_levels`` (0: no trust dynamics), starts in
    the middle, rises by 1 per genuine click and falls by ``betrayal`` per clickbait click."""
    trust_weight: int = 1
    """Affinity taken from every item per trust level below the start: distrust lowers every future click (trust
    above the start adds nothing to clicks; it brings the shopper back)."""
    betrayal: int = 2
    """Trust lost per clickbait click."""
    sessions: int = 1
    """Long-term setting: sessions per episode. When a session ends (patience runs out, or ``session_steps``
    pass) the shopper comes back for the next one with probability ``trust / trust_levels`` (always, without
    trust dynamics), with a new wish and fresh patience; the episode ends when they do not come back."""
    session_steps: int = 0
    """Steps after which a session ends (0: only patience ends it)."""

    def __post_init__(self) -> None:
        if not 2 <= self.slate_size <= 16:
            raise ValueError(f"slate_size must be in [2, 16]; got {self.slate_size}")
        if not 16 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be in [16, {MAX_IMAGE_SIZE}]; got {self.image_size}")
        if self.tile < MIN_TILE:
            smallest = MIN_TILE * max(self.grid)
            raise ValueError(
                f"image_size={self.image_size} with slate_size={self.slate_size} gives {self.tile}-pixel thumbnails, too "
                f"small to show the price pips, pattern and badge (at least {MIN_TILE} px): use image_size >= {smallest}"
            )
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1; got {self.max_steps}")
        if self.reward not in REWARD_MODES:
            raise ValueError(f"reward must be one of {list(REWARD_MODES)}; got {self.reward!r}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1; got {self.patience}")
        for name in ("drift_colour", "drift_category", "purchase_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]; got {getattr(self, name)}")
        if not 2 <= self.num_categories <= 8 or not 2 <= self.num_colours <= 8:
            raise ValueError(f"num_categories and num_colours must be in [2, 8]; got {self.num_categories} and {self.num_colours}")
        if self.catalog is not None and (self.num_categories, self.num_colours) != (8, 8):
            raise ValueError(
                f"catalog={self.catalog!r} replaces the procedural catalogue, whose size num_categories={self.num_categories} "
                f"and num_colours={self.num_colours} set: leave both at 8 (from the command line: env=recommend_full "
                "+env.options.catalog=..., or ~env.options.num_categories ~env.options.num_colours)"
            )
        if self.fatigue_limit < 1:
            raise ValueError(f"fatigue_limit must be >= 1; got {self.fatigue_limit}")
        for name in ("clickbait_appeal", "trust_levels", "trust_weight", "betrayal", "session_steps"):
            if not 0 <= getattr(self, name) <= 100:
                raise ValueError(f"{name} must be in [0, 100]; got {getattr(self, name)}")
        if not 1 <= self.sessions <= 100:
            raise ValueError(f"sessions must be in [1, 100]; got {self.sessions}")
        if self.clickbait_appeal and self.catalog is not None:
            raise ValueError("clickbait_appeal needs the procedural catalogue (a catalogue on disk has no clickbait twins)")

    @property
    def long_term(self) -> bool:
        """Whether any long-term mechanism (clickbait, trust, several sessions) is on."""
        return bool(self.clickbait_appeal or self.trust_levels or self.sessions > 1 or self.session_steps)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the slate image."""
        cols = math.ceil(math.sqrt(self.slate_size))
        return math.ceil(self.slate_size / cols), cols

    @property
    def tile(self) -> int:
        """Thumbnail side in pixels."""
        return self.image_size // max(self.grid)


class Intent(IntEnum):
    """What the shopper's feedback says about the last suggestion."""

    GREET = 0
    LOVE = 1
    DRIFT_COLOUR = 2
    DRIFT_CATEGORY = 3
    TOO_PRICEY = 4
    WRONG_CATEGORY = 5
    WRONG_COLOUR = 6
    MEH = 7
    # long-term setting only
    DISAPPOINTED = 8  # clicked a clickbait item
    BACK_HAPPY = 9  # a new session, trust at or above the start
    BACK_WARY = 10  # a new session, trust below the start


# Three phrasings per intent; {colour}, {category}, {budget} are filled from the current wish.
FEEDBACK = {
    Intent.GREET: ("hi", "hello", "hey there"),
    Intent.LOVE: ("love it !", "great pick , thanks", "nice , i like that one"),
    Intent.DRIFT_COLOUR: (
        "love it ! something like that but in {colour}",
        "nice ! do you have that in {colour} ?",
        "great , now show me one in {colour}",
    ),
    Intent.DRIFT_CATEGORY: (
        "thanks ! now i need a {category}",
        "perfect . next i am after a {category}",
        "got it , now let us find a {category}",
    ),
    Intent.TOO_PRICEY: ("too pricey", "that is too expensive", "out of my budget"),
    Intent.WRONG_CATEGORY: ("that is not what i asked for", "no , wrong kind of item", "not what i need"),
    Intent.WRONG_COLOUR: ("not my colour", "wrong colour", "i do not like that colour"),
    Intent.MEH: ("hmm , not quite", "meh , not for me", "not really"),
    Intent.DISAPPOINTED: (
        "hmm , it looked better in the picture",
        "cheap quality , not what the photo showed",
        "meh , that one was a letdown",
    ),
    Intent.BACK_HAPPY: ("back again ! your picks were great", "hi again , loved my last order", "i am back , you have good taste"),
    Intent.BACK_WARY: ("back , hope you do better this time", "hi again , last time was a letdown", "i am back , not sure about your picks"),
}
_LONG_TERM_INTENTS = (Intent.DISAPPOINTED, Intent.BACK_HAPPY, Intent.BACK_WARY)
REQUESTS = (
    "i want a {colour} {category} under {budget} dollars",
    "show me a {colour} {category} , at most {budget} dollars",
    "looking for a {category} in {colour} , budget {budget} dollars",
)
_SLOTS = {"{colour}": -1, "{category}": -2, "{budget}": -3, "{mood}": -4}
#: with trust dynamics, every utterance opens with the shopper's mood, trust / trust_levels in five steps: what
#: they say shows how they feel about the recommender, as a shopper's tone does
MOODS = ("upset", "wary", "calm", "glad", "thrilled")
PHRASINGS = 3

# Affinity in integer units (see the module docstring); click probability by affinity.
_W_CATEGORY, _W_COLOUR, _W_PATTERN, _W_BUDGET = 6, 4, 2, 8
_A_MIN, _A_MAX = -_W_BUDGET - 16, _W_CATEGORY + _W_COLOUR + _W_PATTERN


@dataclass
class RecommendState(EnvState):
    """Batch-first state tensors, one device."""

    want_category: Tensor  # int64[B]
    want_colour: Tensor  # int64[B]
    budget: Tensor  # int64[B], highest affordable price tier
    liked_pattern: Tensor  # int64[B], never said
    patience: Tensor  # int64[B]
    fatigue: Tensor  # int64[B], clicks in a row in last_category
    last_category: Tensor  # int64[B], category of the last click (-1: none)
    slate: Tensor  # int64[B, K], item ids in slot order
    text: Tensor  # int64[B, L]
    last_action: Tensor  # int64[B] (-1 at the start)
    last_reward: Tensor  # float32[B]
    slot_click: Tensor  # float32[B, K], true click probability of each slot of ``slate``
    slot_value: Tensor  # float32[B, K], expected reward of each slot of ``slate``
    trust: Tensor  # int64[B], 0 .. trust_levels (constant without trust dynamics)
    session: Tensor  # int64[B], 0-based index of the current session
    session_elapsed: Tensor  # int64[B], steps taken in the current session


# ---------------------------------------------------------------------------- task metrics
def _task_metrics(stats: EpisodeStats) -> dict[str, object]:
    steps = float(stats.lengths.sum())
    clicks = float(stats.sums["clicked"].sum())
    return {
        "sessions_per_episode": summarize(1 + stats.sums["returned"]),
        "clickbait_share_of_clicks": float(stats.sums["clickbait_click"].sum() / clicks) if clicks else 0.0,
        "click_through_rate": float(stats.sums["clicked"].sum() / steps),
        "clicks_per_episode": summarize(stats.sums["clicked"]),
        "purchases_per_episode": summarize(stats.sums["purchased"]),
        "revenue_per_episode": summarize(stats.sums["revenue"]),
        "session_length": summarize(stats.lengths),
        "regret_vs_oracle": summarize(stats.sums["regret"]),
        "regret_per_step": float(stats.sums["regret"].sum() / steps),
    }


TASK_METRICS = TaskMetrics(
    sum_keys=("clicked", "purchased", "revenue", "regret", "returned", "clickbait_click"),
    compute=_task_metrics,
    labels={
        "click_through_rate": "click-through rate (clicks / steps)",
        "clicks_per_episode": "clicks per session",
        "purchases_per_episode": "purchases per session",
        "revenue_per_episode": "revenue per session ($)",
        "session_length": "session length (steps)",
        "regret_vs_oracle": "regret vs oracle per session (sum of expected-reward gaps)",
        "regret_per_step": "regret vs oracle per step",
        "sessions_per_episode": "sessions per episode (the shopper came back)",
        "clickbait_share_of_clicks": "share of clicks on clickbait items",
    },
)


class Recommend(BatchedEnv[RecommendState]):
    """Batched Recommend; see the module docstring for the task. Keyword arguments: :class:`RecommendParams`."""

    end_reasons = ("running", "shopper left", "step limit")
    #: what the pictures show, for the replays' legend (mmrl.report)
    legend = (
        "The image is the slate: one tile per slot, left to right, top to bottom. Shape = category, fill = colour, "
        "texture = pattern, pips (1-4) = price tier. In the long-term setting a black-and-white flash badge in a "
        "tile's corner marks a clickbait item. The shopper's wish and reactions are only in the text."
    )
    observation_fields = ("slate", "slot_value", "slot_click", "last_action", "text")
    value_key = "expected_reward"
    task_metrics = TASK_METRICS

    def __init__(self, num_envs: int = 1, device: torch.device | str = "cpu", **params: object):
        super().__init__(num_envs, device)
        self.params = build_params(RecommendParams, params, env_name="Recommend")
        p = self.params
        self.catalog: Catalog = (
            procedural_catalog(p.tile, p.catalog_seed, p.num_categories, p.num_colours, clickbait=p.clickbait_appeal > 0)
            if p.catalog is None
            else load_catalog(p.catalog, p.tile)
        )
        cat = self.catalog
        self.max_episode_steps = p.max_steps
        # the long-term setting's phrases come last, so the short-term task keeps its vocabulary
        self._intents = [i for i in Intent if p.long_term or i not in _LONG_TERM_INTENTS]
        short = [FEEDBACK[i] for i in Intent if i not in _LONG_TERM_INTENTS]
        words = [w for text in (*sum(short, ()), *REQUESTS) for w in text.split() if w not in _SLOTS]
        budget_words = [str(b) for b in TIER_BOUNDS]
        long_words = [w for i in self._intents if i in _LONG_TERM_INTENTS for text in FEEDBACK[i] for w in text.split()]
        mood_words = list(MOODS) if p.trust_levels else []
        self.vocabulary = Vocabulary([*words, *cat.categories, *cat.colours, *budget_words, *long_words, *mood_words])
        self.single_observation_space = spaces.Dict(
            {"image": image_space(p.image_size, p.image_size), "text": TextSpace(self.vocabulary, p.max_text_length)}
        )
        self.single_action_space = spaces.Discrete(p.slate_size)

        dev = self.device
        self._item_category = torch.as_tensor(cat.category, device=dev)
        self._item_colour = torch.as_tensor(cat.colour, device=dev)
        self._item_pattern = torch.as_tensor(cat.pattern, device=dev)
        self._item_tier = torch.as_tensor(cat.tier, device=dev)
        self._item_price = torch.as_tensor(cat.price, device=dev)
        self._item_clickbait = torch.as_tensor(cat.clickbait, device=dev)
        self._item_attributes = torch.stack(
            [self._item_category, self._item_colour, self._item_pattern, self._item_tier], dim=1
        )
        self._affinity_weights = torch.tensor([_W_CATEGORY, _W_COLOUR, _W_PATTERN, 0], device=dev)
        table, count, pairs = cat.combo_table()
        if p.clickbait_appeal:  # a third index: 0 genuine, 1 clickbait
            twin_table, twin_count, _ = cat.combo_table(clickbait=True)
            width = max(table.shape[2], twin_table.shape[2])
            table = torch.stack([torch.nn.functional.pad(t, (0, width - t.shape[2])) for t in (table, twin_table)], dim=2)
            count = torch.stack([count, twin_count], dim=2)
        self._combo_table, self._combo_count, self._pairs = table.to(dev), count.to(dev), pairs.to(dev)
        self._n_categories, self._n_colours = len(cat.categories), len(cat.colours)
        self._trust_start = p.trust_levels // 2
        self._a_min = _A_MIN - p.trust_weight * self._trust_start
        self._a_max = _A_MAX + p.clickbait_appeal
        a = torch.arange(self._a_min, self._a_max + 1, dtype=torch.float64)
        self._click_table = torch.sigmoid(0.75 * (a - 7)).to(torch.float32).to(dev)
        # the long-term slate: the 2x2 design once genuine (slots 0-3 of the plan) and once clickbait (4-7)
        plan = torch.arange(8, device=dev)
        self._twin_cell, self._twin_quality = plan % 4, plan // 4
        self._text_table = self._build_text_table().to(dev)
        self._orders = torch.tensor(list(itertools.permutations(range(4))), dtype=torch.int64, device=dev)
        self._category_word = torch.tensor([self.vocabulary.id(w) for w in cat.categories], device=dev)
        self._colour_word = torch.tensor([self.vocabulary.id(w) for w in cat.colours], device=dev)
        self._budget_word = torch.tensor([self.vocabulary.id(w) for w in budget_words], device=dev)
        # mood word by trust level (with trust dynamics only)
        mood = [MOODS[round((len(MOODS) - 1) * t / max(p.trust_levels, 1))] for t in range(p.trust_levels + 1)]
        self._mood_word = torch.tensor([self.vocabulary.id(w) for w in mood], device=dev) if p.trust_levels else None
        rows, cols = p.grid
        blank = np.zeros((1, 3, p.tile, p.tile), dtype=np.uint8)
        atlas = torch.from_numpy(np.concatenate([cat.thumbnails, blank]))
        self.renderer = SpriteRenderer(atlas, rows, cols, p.image_size).to(dev)
        self._blank_cells = torch.full((1, rows * cols - p.slate_size), cat.num_items, dtype=torch.int64, device=dev)
        k = p.slate_size
        # a slate: the decoys and the order of the 2x2 design, three unused draws, the cells of the slots past
        # the fourth, and the item of each slot; with clickbait, the order of the 8 genuine/clickbait slots and
        # the quality of the slots past the eighth
        twins = bool(p.clickbait_appeal)
        self._slate_draws = rng.Draws(
            decoy_category=1, decoy_colour=1, order=1, unused=rng.Block(3), extra_cells=rng.Block(max(0, k - 4)),
            item=rng.Block(k), twin_order=rng.Block(8 if twins else 0), extra_quality=rng.Block(max(0, k - 8) if twins else 0),
        )  # fmt: skip
        slate, text = rng.Block(self._slate_draws.count), rng.Block(2)
        self._reset_draws = rng.Draws(wish=1, budget=1, pattern=1, patience=1, slate=slate, text=text)
        long_term = rng.Block(3 if p.long_term else 0)  # come back?, the next session's wish and patience
        self._step_draws = rng.Draws(
            click=1, purchase=1, drift_category=1, drift_colour=1, new_category=1, new_colour=1, slate=slate, text=text,
            session=long_term,
        )  # fmt: skip

    # ------------------------------------------------------------------ text
    def _build_text_table(self) -> Tensor:
        """int64[F * PHRASINGS, len(REQUESTS), L]: every feedback phrasing followed by every request,
        padded, with negative placeholders where the wish's words go."""
        length = self.params.max_text_length

        def ids(text: str) -> list[int]:
            return [_SLOTS[w] if w in _SLOTS else self.vocabulary.id(w) for w in text.split()]

        table = []
        for intent in self._intents:
            for feedback in FEEDBACK[intent]:
                row = []
                for request in REQUESTS:
                    tokens = ([_SLOTS["{mood}"]] if self.params.trust_levels else []) + ids(feedback) + ids(request)
                    if len(tokens) > length:
                        raise ValueError(f"max_text_length={length} is too short for {feedback!r} + {request!r} ({len(tokens)} tokens)")
                    row.append(tokens + [0] * (length - len(tokens)))
                table.append(row)
        return torch.tensor(table, dtype=torch.int64)

    def _utterance(
        self, intent: Tensor, u: Tensor, want_category: Tensor, want_colour: Tensor, budget: Tensor, trust: Tensor
    ) -> Tensor:
        """int64[B, L] token ids of the shopper's feedback for ``intent`` followed by their wish (with trust
        dynamics, after a word of their mood)."""
        phrasing = intent * PHRASINGS + rng.randint(u[:, 0], PHRASINGS)
        text = self._text_table[phrasing, rng.randint(u[:, 1], len(REQUESTS))]
        # placeholders -1, -2, -3 (and -4 with trust dynamics) pick the wish's colour, category, budget (and mood) word
        columns = [self._colour_word[want_colour], self._category_word[want_category], self._budget_word[budget]]
        if self._mood_word is not None:
            columns.append(self._mood_word[trust])
        words = torch.stack(columns, dim=1)
        return torch.where(text < 0, words.gather(1, (-1 - text).clamp_(min=0)), text)

    # ------------------------------------------------------------------ slates
    def _draw_slate(self, u: Tensor, want_category: Tensor, want_colour: Tensor) -> Tensor:
        """int64[B, K] item ids: a shuffled 2x2 design of {wished, decoy} category x {wished, decoy} colour
        (extra slots draw a random cell of the design), each slot a random item of its cell. With clickbait, the
        design appears twice in the first 8 slots (shuffled together), once genuine and once clickbait, so the
        wished item is always on offer both ways; slots past the eighth draw a cell and a quality.

        :param u: the slate's uniforms, laid out as ``self._slate_draws``."""
        k, d = self.params.slate_size, self._slate_draws
        decoy_category = (want_category + 1 + rng.randint(u[:, d.decoy_category], self._n_categories - 1)) % self._n_categories
        decoy_colour = (want_colour + 1 + rng.randint(u[:, d.decoy_colour], self._n_colours - 1)) % self._n_colours
        if self.params.clickbait_appeal:
            order = u[:, d.twin_order].argsort(dim=1)  # a random order of the 8 (cell, quality) slots
            cells, quality = self._twin_cell[order], self._twin_quality[order]
            if k > 8:
                cells = torch.cat([cells, rng.randint(u[:, d.extra_cells][:, : k - 8], 4)], dim=1)
                quality = torch.cat([quality, rng.randint(u[:, d.extra_quality], 2)], dim=1)
            cells, quality = cells[:, :k], quality[:, :k]
        else:
            cells = self._orders[rng.randint(u[:, d.order], self._orders.shape[0])]  # a random order of the 4 cells
            if k > 4:
                cells = torch.cat([cells, rng.randint(u[:, d.extra_cells], 4)], dim=1)
            cells = cells[:, :k]
        category = torch.where((cells & 1).bool(), decoy_category[:, None], want_category[:, None])
        colour = torch.where((cells & 2).bool(), decoy_colour[:, None], want_colour[:, None])
        if self.params.clickbait_appeal:
            pick = rng.randint(u[:, d.item], self._combo_count[category, colour, quality])
            return self._combo_table[category, colour, quality, pick]
        pick = rng.randint(u[:, d.item], self._combo_count[category, colour])
        return self._combo_table[category, colour, pick]

    # ------------------------------------------------------------------ user model
    def _affinity(self, state: RecommendState, items: Tensor) -> Tensor:
        """int64[B, K] integer affinity of the shopper in each row for ``items`` int64[B, K]."""
        attributes = self._item_attributes[items]  # [B, K, 4]: category, colour, pattern, tier
        wish = torch.stack([state.want_category, state.want_colour, state.liked_pattern, state.last_category], dim=1)
        same = attributes == wish[:, None, :]  # the tier column compares with last_category: masked out below
        a = (same.to(torch.int64) * self._affinity_weights).sum(dim=2)
        a -= (attributes[:, :, 3] > state.budget[:, None]) * _W_BUDGET
        a -= (attributes[:, :, 0] == state.last_category[:, None]) * state.fatigue[:, None]
        p = self.params
        if p.clickbait_appeal:
            a += self._item_clickbait[items] * p.clickbait_appeal
        if p.trust_levels:
            a -= (p.trust_weight * (self._trust_start - state.trust).clamp(min=0))[:, None]
        return a

    def _reward(self, click: Tensor, purchase: Tensor, price: Tensor, leaves_if_rejected: Tensor) -> Tensor:
        """The reward rule, linear in its outcomes: given the click and purchase (0/1 outcomes, or their
        probabilities), the item's price and whether a rejection makes the shopper leave, the reward (or the
        expected reward): the transition and the expected-value info both use it, so they cannot disagree."""
        mode = self.params.reward
        if mode == "click":
            return click
        if mode == "revenue":
            return purchase * price / 100.0
        return click - (1 - click) * (0.5 + 2.0 * leaves_if_rejected)

    def _with_slot_values(self, state: RecommendState) -> RecommendState:
        """A copy of ``state`` with the click probability and expected reward of every slot of its slate."""
        items = state.slate
        a = self._affinity(state, items).clamp_(self._a_min, self._a_max)
        p_click = self._click_table[a - self._a_min]
        affordable = self._item_tier[items] <= state.budget[:, None]
        p_purchase = p_click * affordable * self.params.purchase_prob
        leaves = (state.patience == 1)[:, None]
        value = self._reward(p_click, p_purchase, self._item_price[items], leaves)
        return dataclasses.replace(state, slot_click=p_click, slot_value=value)

    # ------------------------------------------------------------------ BatchedEnv
    def _initial_state(self, episode_key: Tensor) -> RecommendState:
        p, d = self.params, self._reset_draws
        u = rng.uniform(episode_key, d.count)
        batch = episode_key.shape[0]
        pair = self._pairs[rng.randint(u[:, d.wish], self._pairs.shape[0])]
        want_category, want_colour = pair[:, 0], pair[:, 1]
        budget = rng.randint(u[:, d.budget], len(TIER_BOUNDS))
        slate = self._draw_slate(u[:, d.slate], want_category, want_colour)
        intent = torch.full_like(budget, Intent.GREET)
        text = self._utterance(intent, u[:, d.text], want_category, want_colour, budget, torch.full_like(budget, self._trust_start))
        minus_one = torch.full((batch,), -1, dtype=torch.int64, device=self.device)
        values = torch.zeros(batch, p.slate_size, dtype=torch.float32, device=self.device)
        state = RecommendState(
            elapsed=torch.zeros_like(budget),
            want_category=want_category,
            want_colour=want_colour,
            budget=budget,
            liked_pattern=rng.randint(u[:, d.pattern], len(self.catalog.patterns)),
            patience=p.patience + rng.randint(u[:, d.patience], 3),
            fatigue=torch.zeros_like(budget),
            last_category=minus_one,
            slate=slate,
            text=text,
            last_action=minus_one.clone(),
            last_reward=torch.zeros(batch, dtype=torch.float32, device=self.device),
            slot_click=values,
            slot_value=values,
            trust=torch.full_like(budget, self._trust_start),
            session=torch.zeros_like(budget),
            session_elapsed=torch.zeros_like(budget),
        )
        return self._with_slot_values(state)

    def _transition(self, state: RecommendState, actions: Tensor, step_key: Tensor):
        p, d = self.params, self._step_draws
        u = rng.uniform(step_key, d.count)
        p_click, expected = state.slot_click, state.slot_value
        chosen_slot = actions[:, None]
        chosen = state.slate.gather(1, chosen_slot).squeeze(1)
        clicked = u[:, d.click] < p_click.gather(1, chosen_slot).squeeze(1)
        regret = expected.max(dim=1).values - expected.gather(1, chosen_slot).squeeze(1)
        category, colour = self._item_category[chosen], self._item_colour[chosen]
        over_budget = self._item_tier[chosen] > state.budget
        purchased = clicked & ~over_budget & (u[:, d.purchase] < p.purchase_prob)
        price = self._item_price[chosen]
        revenue = torch.where(purchased, price, 0.0)

        patience_max = p.patience + 2
        patience = torch.where(clicked, torch.clamp(state.patience + 1, max=patience_max), state.patience - 1)
        left = patience <= 0
        reward = self._reward(clicked.to(torch.float32), purchased.to(torch.float32), price, state.patience == 1)

        # interest drift and fatigue
        same = clicked & (category == state.last_category)
        fatigue = torch.where(clicked, torch.where(same, state.fatigue + 1, 1), state.fatigue)
        last_category = torch.where(clicked, category, state.last_category)
        drift_category = clicked & ((fatigue >= p.fatigue_limit) | (u[:, d.drift_category] < p.drift_category))
        drift_colour = clicked & ~drift_category & (u[:, d.drift_colour] < p.drift_colour)
        new_category = (state.want_category + 1 + rng.randint(u[:, d.new_category], self._n_categories - 1)) % self._n_categories
        new_colour = (state.want_colour + 1 + rng.randint(u[:, d.new_colour], self._n_colours - 1)) % self._n_colours
        want_category = torch.where(drift_category, new_category, state.want_category)
        want_colour = torch.where(drift_colour, new_colour, state.want_colour)
        fatigue = torch.where(drift_category, 0, fatigue)

        intent = torch.where(
            clicked,
            torch.where(drift_category, Intent.DRIFT_CATEGORY, torch.where(drift_colour, Intent.DRIFT_COLOUR, Intent.LOVE)),
            torch.where(
                over_budget,
                Intent.TOO_PRICEY,
                torch.where(
                    category != state.want_category,
                    Intent.WRONG_CATEGORY,
                    torch.where(colour != state.want_colour, Intent.WRONG_COLOUR, Intent.MEH),
                ),
            ),
        )
        clickbait_click = clicked & self._item_clickbait[chosen]
        trust, session, session_elapsed = state.trust, state.session, state.session_elapsed + 1
        returned = torch.zeros_like(clicked)
        if p.long_term:
            if p.trust_levels:  # a genuine click earns trust, a clickbait click betrays it
                gained = torch.where(clickbait_click, -p.betrayal, 1) * clicked
                trust = (state.trust + gained).clamp(0, p.trust_levels)
            session_over = left | (session_elapsed >= p.session_steps) if p.session_steps else left
            draw = u[:, d.session]
            # comes back with probability trust / trust_levels (always without trust dynamics)
            back = draw[:, 0] * p.trust_levels < trust if p.trust_levels else torch.ones_like(left)
            returned = session_over & (state.session + 1 < p.sessions) & back
            left = session_over & ~returned
            # the next session: a new wish, fresh patience, no fatigue, a greeting that shows the trust
            wish = self._pairs[rng.randint(draw[:, 1], self._pairs.shape[0])]
            want_category = torch.where(returned, wish[:, 0], want_category)
            want_colour = torch.where(returned, wish[:, 1], want_colour)
            patience = torch.where(returned, p.patience + rng.randint(draw[:, 2], 3), patience)
            fatigue = torch.where(returned, 0, fatigue)
            last_category = torch.where(returned, -1, last_category)
            session = state.session + returned.to(torch.int64)
            session_elapsed = torch.where(returned, 0, session_elapsed)
            greeting = torch.where(trust >= self._trust_start, Intent.BACK_HAPPY, Intent.BACK_WARY)
            intent = torch.where(returned, greeting, torch.where(clickbait_click, Intent.DISAPPOINTED, intent))
        slate = self._draw_slate(u[:, d.slate], want_category, want_colour)
        text = self._utterance(intent, u[:, d.text], want_category, want_colour, state.budget, trust)
        next_state = dataclasses.replace(
            state,
            want_category=want_category,
            want_colour=want_colour,
            patience=patience,
            fatigue=fatigue,
            last_category=last_category,
            slate=slate,
            text=text,
            last_action=actions.clone(),
            last_reward=reward.clone(),
            trust=trust,
            session=session,
            session_elapsed=session_elapsed,
        )
        info = {
            "clicked": clicked,
            "purchased": purchased,
            "revenue": revenue,
            "chosen_item": chosen,
            "regret": regret,
            "clickbait_click": clickbait_click,
            "returned": returned,
            "end_reason": left.to(torch.int64),  # 1: the shopper left (the engine marks the step limit)
        }
        return self._with_slot_values(next_state), reward, left, info

    def _observe(self, state: RecommendState) -> dict[str, Tensor]:
        cells = state.slate
        if self._blank_cells.shape[1]:
            cells = torch.cat([cells, self._blank_cells.expand(cells.shape[0], -1)], dim=1)
        return {"image": self.renderer.render(cells), "text": state.text.clone()}

    def _decision_info(self, state: RecommendState) -> dict[str, Tensor]:
        info = {"affinity": state.slot_click.clone(), "expected_reward": state.slot_value.clone(), "item_ids": state.slate.clone()}
        if self.params.clickbait_appeal:
            info["clickbait"] = self._item_clickbait[state.slate]
        if self.params.long_term:
            info["trust"], info["session"] = state.trust.clone(), state.session.clone()
        return info

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

    def reference_policies(self) -> dict[str, PolicyFactory]:
        """``greedy``: :class:`GreedyRecommender`; ``myopic``/``oracle`` (generic) take the argmax of
        ``expected_reward``. With clickbait, ``careful``: the best expected reward among genuine items. In the
        long-term setting, ``planner``: :class:`~mmrl.core.planner.RolloutPlanner` over ``careful`` (or the myopic
        policy without clickbait), the upper bound of the learning tables."""
        policies: dict[str, PolicyFactory] = {"greedy": lambda seed: GreedyRecommender(self)}
        if self.params.clickbait_appeal:
            policies["careful"] = lambda seed: CarefulRecommender()
        if self.params.long_term:
            base = CarefulRecommender.choose if self.params.clickbait_appeal else None
            policies["planner"] = lambda seed: RolloutPlanner(self, base=base)
        return policies

    def describe_action(self, action: int) -> str:
        return f"slot {action}"

    def describe_truth(self, state: RecommendState) -> str:
        """The shopper's hidden wish (with the liked pattern they never say), patience, each slot's true click
        chance, and in the long-term setting the visit and the trust (one row)."""
        cat = self.catalog
        chances = " ".join(f"{100 * float(c):.0f}%" for c in state.slot_click[0])
        words = (
            f"wants a {cat.colours[int(state.want_colour[0])]} {cat.categories[int(state.want_category[0])]} up to "
            f"{TIER_BOUNDS[int(state.budget[0])]} dollars, likes {cat.patterns[int(state.liked_pattern[0])]} (never said); "
            f"patience {int(state.patience[0])}; click chance by slot {chances}"
        )
        if self.params.long_term:
            words += f"; visit {int(state.session[0]) + 1}/{self.params.sessions}"
            if self.params.trust_levels:
                words += f", trust {int(state.trust[0])}/{self.params.trust_levels}"
        return words

    def _frame_lines(self, state: RecommendState, index: int) -> list[str]:
        """Text panel of the replay frame: the utterance, the step and return, the last outcome, the hidden wish
        (and, in the long-term setting, the visit and the trust)."""
        last = int(state.last_action[0])
        return [
            f'"{self.decode(state.text[0])}"',
            f"step {int(state.elapsed[0])}/{self.max_episode_steps}   return {float(self.episode_return[index]):.2f}",
            "start of session" if last < 0 else f"last: slot {last}, reward {float(state.last_reward[0]):.2f}",
            f"truth: {self.describe_truth(state)}",
        ]


# ---------------------------------------------------------------------------- reference policies
class CarefulRecommender:
    """The myopic choice among genuine items: the slot of the highest expected reward that is not clickbait
    (``info["clickbait"]``), which keeps the shopper's trust; the base policy of the long-term planner."""

    @staticmethod
    def choose(info: Info) -> Tensor:
        value = info["expected_reward"]
        return torch.where(info["clickbait"], torch.finfo(value.dtype).min, value).argmax(dim=1)

    def act(self, obs: Observation, info: Info) -> Tensor:
        return self.choose(info)

    def update(self, info: Info, done: Tensor) -> None:
        pass


class GreedyRecommender:
    """A myopic content-based recommender: the item most like the last one clicked.

    Scores each slot's item (``info["item_ids"]``) by shared category (2), colour (1) and pattern (0.5)
    with the last clicked item, cheaper tiers first on ties; before any click it offers the cheapest.
    It never reads the shopper's words."""

    def __init__(self, env: Recommend):
        catalog, device = env.catalog, env.device
        self.attributes = torch.stack(
            [torch.as_tensor(a, device=device) for a in (catalog.category, catalog.colour, catalog.pattern)], dim=1
        )
        self.tier = torch.as_tensor(catalog.tier, device=device)
        self.weights = torch.tensor([2.0, 1.0, 0.5], device=device)
        self.last_clicked = torch.full((env.num_envs,), -1, dtype=torch.int64, device=device)

    def act(self, obs: Observation, info: Info) -> Tensor:
        items = info["item_ids"]
        known = self.last_clicked >= 0
        reference = self.attributes[self.last_clicked.clamp(min=0)]
        same = (self.attributes[items] == reference[:, None, :]).float() @ self.weights
        score = same * known[:, None] - 0.1 * self.tier[items]
        return score.argmax(dim=1)

    def update(self, info: Info, done: Tensor) -> None:
        self.last_clicked = torch.where(info["clicked"], info["chosen_item"], self.last_clicked)
        self.last_clicked = torch.where(done, -1, self.last_clicked)
