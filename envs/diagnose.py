"""Diagnose: sequential triage, where a diagnosis needs both the scan and the written history.

**Task.** An episode is a shift of ``patients`` patients, seen one after the other. Each has one
hidden condition out of ``2 * num_findings`` (6 by default). The agent sees the patient's chest scan
and reads their history; each step it either orders a test (which costs a little and reveals a result
in the text, or a detailed view of the scan) or gives a diagnosis, which closes the case: the next
patient comes in, or, after the last one, the episode ends. With ``patients=1`` a diagnosis ends the
episode. (The default shift of 3 makes every episode last at least 3 steps, so a first action cannot
end it.) This is a synthetic toy: the conditions' names make replays readable; the medicine is not real.

**Why it needs both modalities.** Conditions come in pairs. The two members of a pair show the same
lesion on the scan (nodule, patch, streaks, cavity) and differ only in whether the patient has an
infection, which only the text tells (a history of fever, a white cell count, a temperature chart).
Across pairs it is the other way round: same text facts, different lesion. And every scan shows a
lesion in *each* lung: one is the patient's problem, the other an incidental finding of a random
shape, and only the text says which side hurts. So the image alone leaves the shape of either lesion
and either infection status (four candidates, or two when both lesions look alike), the text alone
``num_findings``; only together do they name the condition: read the side in the text, find that
lung's lesion in the image, read its shape, weigh the text's evidence of infection.

=========  ============  ===============
finding    infection     no infection
=========  ============  ===============
nodule     abscess       tumour
patch      pneumonia     oedema
streaks    bronchitis    fibrosis
cavity     tuberculosis  cyst
=========  ============  ===============

**Action space.** ``Discrete(3 + 2 * num_findings)``: ``0..2`` order a test (:class:`Exam`: blood
count, detailed scan, temperature chart); ``3 + c`` diagnoses condition ``c`` (:data:`CONDITIONS`
order, i.e. ``c = 2 * finding + (0 if infection else 1)``). ``action_masks()`` (and ``info["action_mask"]``
on the Gymnasium, SB3 and TorchRL faces) rules out the tests already ordered for the current patient.

**Observation space.** ``Dict(image=Box(0, 255, (3, S, S), uint8), text=TextSpace(V, L))``.
The image is a greyscale scan composed from an 8x8 grid of noisy tissue sprites: body wall, two lung
fields and the mediastinum, with a 2x2-cell lesion in each lung, each at a random height. With
probability ``clear_scan_prob`` the first scan shows the lesions' shapes; otherwise hazy opacities hide
both. After the *detailed scan* test the image is a 4x zoom on both lesions (left lung's on the left,
right lung's on the right), shapes always visible. The text is the history (age, a presenting symptom,
duration, the side of the pain, and whether the patient reports fever) followed by the result of every
test ordered so far, as padded token ids.

**Evidence model** (all drawn at the start, revealed by the tests). The reported fever agrees with
the infection status with probability ``fever_reliability``; the blood count (high / normal) with
``blood_accuracy``; the temperature chart with ``temperature_accuracy``. Age, symptom and duration are
uninformative. ``info["posterior"]`` is the exact posterior over conditions given everything revealed
so far: what a perfect reader of image and text knows.

**Rewards.** ``-test_cost`` per test ordered (repeating a test costs again and reveals nothing new);
a diagnosis gives +1 when right and -1 when wrong.

**Starting state.** Each patient (the first at reset, the next ones drawn when a case closes): the
condition uniform; lesion side, heights and the tissue's noise pattern (one of ``NOISE_PATTERNS``
fixed per-cell noise maps) from the instance's RNG stream; phrasings uniform
among three per sentence; no test ordered.

**Episode end.** Terminated by the diagnosis of the last patient of the shift; truncated at
``max_steps`` (an undiagnosed patient earns nothing).
``info["end_reason"]`` indexes :attr:`Diagnose.end_reasons`: running, right diagnosis, wrong
diagnosis, step limit (a diagnosis before the last patient reports the case's outcome while the
episode goes on).

**Info.** About the returned observation (the current patient): ``condition``, ``finding``,
``side`` (0 left, 1 right), ``infection``, ``revealed bool[3] (tests ordered so far), ``posterior`` float32[C], ``patient``
(0-based index in the shift). About the step just taken: ``diagnosed``,
``correct``, ``test_ordered`` (-1 when none), ``end_reason``.

**Arguments.** See :class:`DiagnoseParams`.

**Version history.** v0: first release (issue #7); a lesion in each lung and the side of the pain
in the text, so that the image alone no longer names the lesion that matters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from mmrl.core import rng
from mmrl.core.batched_env import BatchedEnv, EnvState, Info, Observation, PolicyFactory
from mmrl.core.params import build_params
from mmrl.core.renderer import BlockPaster, SpriteRenderer
from mmrl.core.spaces import MAX_IMAGE_SIZE, TextSpace, Vocabulary, image_space
from mmrl.envs.sprites import SCAN_FINDINGS, scan_atlas
from mmrl.episodes import EpisodeStats
from mmrl.metrics import TaskMetrics, summarize

#: Conditions, ``2 * finding + (0 infection, 1 no infection)``.
CONDITIONS = ("abscess", "tumour", "pneumonia", "oedema", "bronchitis", "fibrosis", "tuberculosis", "cyst")


class Exam(IntEnum):
    """The tests the agent can order (action ``i`` orders test ``i``)."""

    BLOOD = 0
    SCAN = 1
    TEMPERATURE = 2


NUM_TESTS = len(Exam)
GRID = 8  # the scan is an 8x8 grid of sprites
TISSUE_VARIANTS = 4
NOISE_PATTERNS = 64  # fixed maps of per-cell tissue variants; a patient's scan uses one (pre-rendered backgrounds)
ZOOM_PATTERNS = 16  # the detailed scan's tissue uses the first 16 maps; every zoom image is pre-rendered
LESION_VARIANTS = 2
# anatomy: 0 body wall, 1 lung, 2 mediastinum (columns 1-2 and 5-6 are lungs, 3-4 mediastinum)
_ANATOMY = [[0] * GRID] + [[0, 1, 1, 2, 2, 1, 1, 0] for _ in range(GRID - 2)] + [[0] * GRID]
_LUNG_COLUMNS = (1, 5)  # left column of the 2-cell-wide lesion in each lung
_LESION_ROWS = GRID - 3  # top row of the lesion: 1 .. 5

AGES = ("25", "35", "45", "55", "65", "75")
SYMPTOMS = ("cough", "breathlessness", "wheezing", "fatigue", "chest-pain")
DAYS = ("2", "3", "5", "7", "10", "14")
SIDES = ("left", "right")  # the lung whose lesion is the patient's problem (image columns 1-2 or 5-6)
_SLOTS = ("{age}", "{symptom}", "{days}", "{side}")  # filled in from the patient


class Sentence(IntEnum):
    """The text's sentence kinds; each has three phrasings in :data:`SENTENCES`."""

    INTRO = 0
    FEVER = 1
    NO_FEVER = 2
    BLOOD_HIGH = 3
    BLOOD_NORMAL = 4
    SCAN = 5
    TEMPERATURE_HIGH = 6
    TEMPERATURE_NORMAL = 7
    SIDE = 8


SENTENCES = {
    Sentence.INTRO: (
        "{age} year old with {symptom} for {days} days .",
        "patient aged {age} , {symptom} for the last {days} days .",
        "a {age} year old reports {symptom} over {days} days .",
    ),
    Sentence.FEVER: ("has had a fever .", "reports fevers and chills .", "feels feverish at night ."),
    Sentence.NO_FEVER: ("no fever .", "denies any fever .", "has not felt feverish ."),
    Sentence.BLOOD_HIGH: (
        "blood test : white cell count is high .",
        "blood test : raised white cells .",
        "bloods show an elevated white count .",
    ),
    Sentence.BLOOD_NORMAL: (
        "blood test : white cell count is normal .",
        "blood test : white cells within range .",
        "bloods show a normal white count .",
    ),
    Sentence.SCAN: ("detailed scan : see image .", "high resolution scan shown .", "zoomed views of both lungs attached ."),
    Sentence.TEMPERATURE_HIGH: (
        "temperature chart : spikes above 38 .",
        "charted temperature is raised .",
        "observations show a high temperature .",
    ),
    Sentence.TEMPERATURE_NORMAL: (
        "temperature chart : stays below 37.5 .",
        "charted temperature is normal .",
        "observations show a normal temperature .",
    ),
    Sentence.SIDE: ("pain is on the {side} side .", "the {side} side of the chest hurts .", "points to the {side} side when coughing ."),
}
PHRASINGS = 3
# the text is these parts in order: intro, side of the pain, fever history, then the three test results
# (blank until ordered); each part has its own phrasing draw
_PARTS = 3 + NUM_TESTS
_RESULTS = 3  # index of the first test result among the parts
_RESULT_CODES = 1 + 2 * PHRASINGS  # a result slot: blank, or one of two outcomes in one of three phrasings


@dataclass(frozen=True)
class DiagnoseParams:
    """Static parameters of Diagnose (anything that sets a shape, plus the evidence model)."""

    patients: int = 3
    """Patients per episode (a shift); each diagnosis closes one case."""
    num_findings: int = 3
    """Lesion shapes in play (2-4); there are twice as many conditions."""
    clear_scan_prob: float = 0.5
    """Chance that the first scan shows the lesion's shape (else a hazy opacity hides it)."""
    fever_reliability: float = 0.8
    """Chance that the reported fever agrees with the infection status."""
    blood_accuracy: float = 0.95
    """Chance that the blood count (high / normal) agrees with the infection status."""
    temperature_accuracy: float = 0.75
    """Chance that the temperature chart agrees with the infection status."""
    test_cost: float = 0.05
    """Cost (negative reward) of ordering a test."""
    image_size: int = 64
    """Side of the square observation image in pixels (at least 32)."""
    max_steps: int = 24
    """Step limit of an episode (truncation), for the whole shift."""
    max_text_length: int = 48
    """Length L of the padded token-id text."""

    def __post_init__(self) -> None:
        if self.patients < 1:
            raise ValueError(f"patients must be >= 1; got {self.patients}")
        if not 2 <= self.num_findings <= len(SCAN_FINDINGS):
            raise ValueError(f"num_findings must be in [2, {len(SCAN_FINDINGS)}]; got {self.num_findings}")
        for name in ("clear_scan_prob", "fever_reliability", "blood_accuracy", "temperature_accuracy"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]; got {getattr(self, name)}")
        if not 0.0 <= self.test_cost <= 1.0:
            raise ValueError(f"test_cost must be in [0, 1]; got {self.test_cost}")
        if not 4 * GRID <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be >= {4 * GRID} and <= {MAX_IMAGE_SIZE}; got {self.image_size}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1; got {self.max_steps}")
        if self.max_text_length < 1:
            raise ValueError(f"max_text_length must be >= 1; got {self.max_text_length}")

    @property
    def num_conditions(self) -> int:
        return 2 * self.num_findings

    @property
    def tile(self) -> int:
        return self.image_size // GRID


@dataclass
class DiagnoseState(EnvState):
    """Batch-first state tensors, one device."""

    finding: Tensor  # int64[B], shape of the lesion in the painful side's lung
    other_finding: Tensor  # int64[B], shape of the incidental lesion in the other lung
    side: Tensor  # int64[B], the painful side: 0 left, 1 right
    infection: Tensor  # bool[B]
    clear: Tensor  # bool[B], the first scan shows the lesion's shape
    fever: Tensor  # bool[B], the history reports fever
    blood_high: Tensor  # bool[B], result of the blood count (revealed by Exam.BLOOD)
    temperature_high: Tensor  # bool[B], result of the temperature chart
    revealed: Tensor  # bool[B, NUM_TESTS]
    scan_image: Tensor  # int64[B], the first scan's pre-rendered background (its tissue noise pattern)
    zoom_image: Tensor  # int64[B], the detailed scan's pre-rendered image
    lesion_corner: Tensor  # int64[B, 2], top-left cell of each 2x2-cell lesion (the finding's lung, the other)
    lesion_look: Tensor  # int64[B, 2], shape shown (a finding, or num_findings: the haze) * LESION_VARIANTS + variant
    phrasing: Tensor  # int64[B, _PARTS], phrasing of each part of the text
    intro: Tensor  # int64[B], row of the filled-in intro sentence in the intro table
    history: Tensor  # int64[B], row of the side and fever sentences in the history table
    text: Tensor  # int64[B, L], the record: intro, history, then the results of the tests ordered
    patient: Tensor  # int64[B], index of the current patient in the shift
    last_action: Tensor  # int64[B] (-1 at the start)
    last_reward: Tensor  # float32[B]
    end_reason: Tensor  # int64[B]


#: State fields that belong to the episode, not to the current patient (kept when the next one comes in).
_EPISODE_FIELDS = ("elapsed", "patient", "last_action", "last_reward", "end_reason")


# ---------------------------------------------------------------------------- task metrics
def _task_metrics(stats: EpisodeStats) -> dict[str, object]:
    diagnoses = stats.sums["diagnosed"]
    return {
        "diagnostic_accuracy": float(stats.sums["correct"].sum() / max(diagnoses.sum(), 1.0)),
        "correct_per_episode": summarize(stats.sums["correct"]),
        "diagnoses_per_episode": summarize(diagnoses),
        "tests_per_episode": summarize(stats.sums["tested"]),
        "episode_length": summarize(stats.lengths),
    }


TASK_METRICS = TaskMetrics(
    sum_keys=("diagnosed", "correct", "tested"),
    compute=_task_metrics,
    labels={
        "diagnostic_accuracy": "diagnostic accuracy (right diagnoses / diagnoses)",
        "correct_per_episode": "right diagnoses per shift",
        "diagnoses_per_episode": "diagnoses per shift",
        "tests_per_episode": "tests ordered per shift",
        "episode_length": "steps per shift",
    },
)


class Diagnose(BatchedEnv[DiagnoseState]):
    """Batched Diagnose; see the module docstring for the task. Keyword arguments: :class:`DiagnoseParams`."""

    end_reasons = ("running", "right diagnosis", "wrong diagnosis", "step limit")
    #: what the pictures show, for the replays' legend (mmrl.report)
    legend = (
        "The image is a greyscale chest scan: body wall, two lung fields and the mediastinum, with a lesion in each "
        "lung (nodule, patch, streaks or cavity); a hazy opacity can hide their shapes. After a 'detailed scan' "
        "test it is a 4x zoom on both lesions (left lung's on the left). Only the text (history, test results) "
        "says which side hurts and whether there is an infection."
    )
    observation_fields = ("revealed", "zoom_image", "scan_image", "lesion_corner", "lesion_look", "text")
    task_metrics = TASK_METRICS

    def __init__(self, num_envs: int = 1, device: torch.device | str = "cpu", **params: object):
        super().__init__(num_envs, device)
        self.params = build_params(DiagnoseParams, params, env_name="Diagnose")
        p = self.params
        self.max_episode_steps = p.max_steps
        self.conditions = CONDITIONS[: p.num_conditions]
        self.findings = SCAN_FINDINGS[: p.num_findings]
        words = [w for texts in SENTENCES.values() for t in texts for w in t.split() if w not in _SLOTS]
        self.vocabulary = Vocabulary([*words, *AGES, *SYMPTOMS, *DAYS, *SIDES])
        self.single_observation_space = spaces.Dict(
            {"image": image_space(p.image_size, p.image_size), "text": TextSpace(self.vocabulary, p.max_text_length)}
        )
        self.single_action_space = spaces.Discrete(NUM_TESTS + p.num_conditions)
        self.action_names = tuple(
            [f"order {t.name.lower()} test" for t in Exam] + [f"diagnose {c}" for c in self.conditions]
        )

        dev = self.device
        self._text_tables = [(tokens.to(dev), length.to(dev)) for tokens, length in self._build_text_tables()]
        self._text_columns = torch.arange(p.max_text_length, device=dev)
        atlas = scan_atlas(p.tile, p.num_findings, TISSUE_VARIANTS, LESION_VARIANTS)
        self.renderer = SpriteRenderer(torch.from_numpy(atlas), GRID, GRID, p.image_size).to(dev)
        self._anatomy = torch.tensor(_ANATOMY, dtype=torch.int64, device=dev).reshape(1, -1)
        self._lesion_base = 3 * TISSUE_VARIANTS
        self._zoom_base = self._lesion_base + (p.num_findings + 1) * 4 * LESION_VARIANTS
        quadrant = torch.arange(4, device=dev)
        self._lesion_offsets = (quadrant // 2) * GRID + quadrant % 2  # cell offsets of a 2x2 square
        zoom = torch.arange(16, device=dev)
        left_block = (2 + zoom // 4) * GRID + zoom % 4  # rows 2-5, columns 0-3: the left lesion's zoom
        self._zoom_cells = torch.stack([left_block, left_block + 4])  # [side, 16]
        self._lung_columns = torch.tensor(_LUNG_COLUMNS, device=dev)
        self._draws = rng.Draws(
            finding=1, infection=1, clear=1, fever=1, blood=1, temperature=1, side=1, top=1, lesion_variant=1,
            age=1, symptom=1, days=1, other_finding=1, other_top=1, phrasing=rng.Block(_PARTS), pattern=1,
        )  # fmt: skip
        # Images rendered once (instead of a gather of all 64 cells per step): every noise pattern's lesion-free
        # first scan (the lesions are pasted on), then every detailed scan (pattern x left shape x right shape x
        # lesion variant; the zoomed lesions cover half the image, so pasting them would gather as much).
        noise = np.random.default_rng(0).integers(TISSUE_VARIANTS, size=(NOISE_PATTERNS, GRID * GRID))
        self._noise_table = torch.from_numpy(noise).to(dev)
        f = p.num_findings
        combo = torch.arange(ZOOM_PATTERNS * f * f * LESION_VARIANTS, device=dev)
        variant, rest = combo % LESION_VARIANTS, combo // LESION_VARIANTS
        right, rest = rest % f, rest // f
        left, zoom_pattern = rest % f, rest // f
        zoom_grids = self._zoom_grid(zoom_pattern, torch.stack([left, right], dim=1), variant)
        #: the sprite grid of each pre-rendered image: first-scan backgrounds, then detailed scans
        self._grids = torch.cat([self._anatomy * TISSUE_VARIANTS + self._noise_table, zoom_grids])
        images = self.renderer.render(self._grids)
        if not bool((images[:, 1:] == images[:, :1]).all()):
            raise AssertionError("the scan atlas must be grey (three equal channels)")
        #: the pre-rendered scans, one channel of S * S bytes each (a third of the bytes to keep in the cache);
        #: an observation gathers each row's scan three times
        self._scans = images[:, 0].reshape(images.shape[0], -1).contiguous()
        self._build_block_paste()

    def _build_block_paste(self) -> None:
        """The paste of the first scan's lesions: each 2x2-cell lesion (a shape or the haze, in a variant) is one
        block of the :class:`~mmrl.core.renderer.BlockPaster`, at a corner cell in either lung
        (``_corner_position``: cell -> the paster's position)."""
        p = self.params
        tile, margin = p.tile, (p.image_size - GRID * p.tile) // 2
        shape, variant = torch.meshgrid(torch.arange(p.num_findings + 1), torch.arange(LESION_VARIANTS), indexing="ij")
        quadrant = torch.arange(4)
        sprites = self._lesion_base + (shape.reshape(-1, 1) * 4 + quadrant) * LESION_VARIANTS + variant.reshape(-1, 1)
        quads = self.renderer.atlas.cpu()[sprites]  # [blocks, 4, 3, T, T], in block_id = look order
        blocks = torch.cat([torch.cat([quads[:, 0], quads[:, 1]], dim=3), torch.cat([quads[:, 2], quads[:, 3]], dim=3)], dim=2)
        rows, columns = torch.meshgrid(torch.arange(1, 1 + _LESION_ROWS), torch.tensor(_LUNG_COLUMNS), indexing="ij")
        cells = (rows * GRID + columns).reshape(-1)
        corners = torch.stack([margin + rows.reshape(-1) * tile, margin + columns.reshape(-1) * tile], dim=1)
        self._paster = BlockPaster(blocks.to(self.device), p.image_size, corners)
        position = torch.full((GRID * GRID,), -1, dtype=torch.int64)
        self._corner_position = position.index_copy(0, cells, torch.arange(len(cells))).to(self.device)

    # ------------------------------------------------------------------ text
    def _build_text_tables(self) -> list[tuple[Tensor, Tensor]]:
        """The record's three parts, every variant composed once: ``(tokens int64[V, W], length int64[V])``
        for the intro (:meth:`_intro_row`), the history (:meth:`_history_row`) and the test results
        (:meth:`_results_row`). Rows are padded with zeros (at least one); the intro's to the text length."""

        def fill(text: str, **slots: str) -> list[int]:
            return [self.vocabulary.id(slots.get(w[1:-1], w) if w.startswith("{") else w) for w in text.split()]

        intro = [
            fill(text, age=age, symptom=symptom, days=days)
            for text in SENTENCES[Sentence.INTRO] for age in AGES for symptom in SYMPTOMS for days in DAYS
        ]
        history = [
            fill(side_text, side=side) + fill(fever_text)
            for side_text in SENTENCES[Sentence.SIDE] for side in SIDES
            for kind in (Sentence.FEVER, Sentence.NO_FEVER) for fever_text in SENTENCES[kind]
        ]

        def result(kinds: tuple[Sentence, ...]) -> list[list[int]]:  # blank, then each kind's phrasings
            return [[]] + [fill(text) for kind in kinds for text in SENTENCES[kind]]

        results = [
            blood + scan + temperature
            for blood in result((Sentence.BLOOD_HIGH, Sentence.BLOOD_NORMAL))
            for scan in result((Sentence.SCAN,))
            for temperature in result((Sentence.TEMPERATURE_HIGH, Sentence.TEMPERATURE_NORMAL))
        ]
        longest = sum(max(len(r) for r in rows) for rows in (intro, history, results))
        if longest > self.params.max_text_length:
            raise ValueError(f"max_text_length={self.params.max_text_length} is too short: the full record takes {longest} tokens")
        tables = []
        for rows, width in ((intro, self.params.max_text_length), (history, None), (results, None)):
            width = width or max(len(r) for r in rows) + 1
            tokens = torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.int64)
            tables.append((tokens, torch.tensor([len(r) for r in rows], dtype=torch.int64)))
        return tables

    def _zoom_grid(self, pattern: Tensor, lung_shapes: Tensor, variant: Tensor) -> Tensor:
        """The detailed scan's sprite ids int64[B, 64]: lung tissue of noise pattern ``pattern % ZOOM_PATTERNS``,
        the left and right lesions ``lung_shapes`` int64[B, 2] zoomed side by side."""
        zoom = torch.arange(16, device=self.device)
        zoomed = self._zoom_base + ((lung_shapes[:, :, None] * 16 + zoom) * LESION_VARIANTS + variant[:, None, None])
        cells = self._zoom_cells.reshape(1, 32).expand(pattern.shape[0], -1)
        return (TISSUE_VARIANTS + self._noise_table[pattern % ZOOM_PATTERNS]).scatter(1, cells, zoomed.reshape(-1, 32))

    def _zoom_index(self, pattern: Tensor, lung_shapes: Tensor, variant: Tensor) -> Tensor:
        """The index among the pre-rendered images of the detailed scan that :meth:`_zoom_grid` describes."""
        f = self.params.num_findings
        zoom_pattern = pattern % ZOOM_PATTERNS
        return NOISE_PATTERNS + ((zoom_pattern * f + lung_shapes[:, 0]) * f + lung_shapes[:, 1]) * LESION_VARIANTS + variant

    def sprite_grid(self, state: DiagnoseState) -> Tensor:
        """int64[B, 64]: the sprite id of every cell of the scan each row shows (the first scan, or the
        detailed scan once ordered), row-major over the 8 x 8 grid; the observation renders exactly this."""
        zoomed = state.revealed[:, Exam.SCAN]
        grid = self._grids[torch.where(zoomed, state.zoom_image, state.scan_image)]
        return torch.where(zoomed[:, None], grid, grid.scatter(1, *self._lesion_sprites(state)))

    def _lesion_sprites(self, state: DiagnoseState) -> tuple[Tensor, Tensor]:
        """``(cells, sprite ids)``, int64[B, 8] each: the first scan's lesion sprites, 4 per lesion."""
        quadrant = torch.arange(4, device=self.device)
        cells = (state.lesion_corner[:, :, None] + self._lesion_offsets).reshape(-1, 8)
        shape, variant = state.lesion_look // LESION_VARIANTS, state.lesion_look % LESION_VARIANTS
        sprites = self._lesion_base + (shape[:, :, None] * 4 + quadrant) * LESION_VARIANTS + variant[:, :, None]
        return cells, sprites.reshape(-1, 8)

    @staticmethod
    def _intro_row(phrasing: Tensor, age: Tensor, symptom: Tensor, days: Tensor) -> Tensor:
        """Row of the intro table: the intro's phrasing with the age, symptom and days (indices) filled in."""
        return ((phrasing * len(AGES) + age) * len(SYMPTOMS) + symptom) * len(DAYS) + days

    @staticmethod
    def _history_row(phrasing: Tensor, side: Tensor, fever: Tensor) -> Tensor:
        """Row of the history table: the side of the pain's sentence, then the fever's (``phrasing``: the
        text's phrasing draws, int64[B, _PARTS])."""
        return ((phrasing[:, 1] * len(SIDES) + side) * 2 + (~fever).to(torch.int64)) * PHRASINGS + phrasing[:, 2]

    @staticmethod
    def _results_row(state: DiagnoseState, revealed: Tensor) -> Tensor:
        """Row of the results table: each test's result in its phrasing where ``revealed``, else blank."""
        phrasing = state.phrasing[:, _RESULTS:]
        outcome = torch.stack([~state.blood_high, torch.zeros_like(state.blood_high), ~state.temperature_high], dim=1)
        code = torch.where(revealed, 1 + outcome.to(torch.int64) * PHRASINGS + phrasing, 0)
        return (code[:, 0] * (1 + PHRASINGS) + code[:, 1]) * _RESULT_CODES + code[:, 2]

    def _compose_text(self, intro: Tensor, history: Tensor, results: Tensor) -> Tensor:
        """int64[B, L]: the intro, history and results rows joined, padded at the end. Each column takes its
        token from the part it falls in: row gathers and a shifted gather per part (no scatter, which
        compiles poorly)."""
        (intro_tokens, intro_length), (history_tokens, history_length), (results_tokens, _) = self._text_tables
        column = self._text_columns
        end_intro = intro_length.index_select(0, intro)[:, None]
        end_history = end_intro + history_length.index_select(0, history)[:, None]
        from_history = history_tokens.index_select(0, history).gather(1, (column - end_intro).clamp_(0, history_tokens.shape[1] - 1))
        from_results = results_tokens.index_select(0, results).gather(1, (column - end_history).clamp_(0, results_tokens.shape[1] - 1))
        rest = torch.where(column < end_history, from_history, from_results)
        return torch.where(column < end_intro, intro_tokens.index_select(0, intro), rest)

    # ------------------------------------------------------------------ evidence
    def posterior(self, state: DiagnoseState) -> Tensor:
        """float32[B, C]: the posterior over conditions given the evidence revealed in each row."""
        p = self.params
        r_f, r_b, r_t = p.fever_reliability, p.blood_accuracy, p.temperature_accuracy
        like_yes = torch.where(state.fever, r_f, 1 - r_f)
        like_no = torch.where(state.fever, 1 - r_f, r_f)
        for index, result, accuracy in ((Exam.BLOOD, state.blood_high, r_b), (Exam.TEMPERATURE, state.temperature_high, r_t)):
            shown = state.revealed[:, index]
            like_yes = like_yes * torch.where(shown, torch.where(result, accuracy, 1 - accuracy), 1.0)
            like_no = like_no * torch.where(shown, torch.where(result, 1 - accuracy, accuracy), 1.0)
        total = like_yes + like_no
        p_infection = torch.where(total > 0, like_yes / total.clamp(min=1e-12), 0.5)
        known = state.clear | state.revealed[:, Exam.SCAN]
        onehot = torch.nn.functional.one_hot(state.finding, p.num_findings).to(torch.float32)
        p_finding = torch.where(known[:, None], onehot, 1.0 / p.num_findings)
        return torch.stack([p_finding * p_infection[:, None], p_finding * (1 - p_infection)[:, None]], dim=2).reshape(
            -1, p.num_conditions
        )

    # ------------------------------------------------------------------ BatchedEnv
    def _initial_state(self, episode_key: Tensor, compose_text: bool = True) -> DiagnoseState:
        """A new patient per row; without ``compose_text`` the text is left empty (the caller composes it)."""
        p, d = self.params, self._draws
        dev = self.device
        u = rng.uniform(episode_key, d.count)
        batch = episode_key.shape[0]
        finding = rng.randint(u[:, d.finding], p.num_findings)
        infection = u[:, d.infection] < 0.5
        clear = u[:, d.clear] < p.clear_scan_prob

        def agrees(x: Tensor, prob: float) -> Tensor:
            return torch.where(x < prob, infection, ~infection)

        fever = agrees(u[:, d.fever], p.fever_reliability)
        blood_high = agrees(u[:, d.blood], p.blood_accuracy)
        temperature_high = agrees(u[:, d.temperature], p.temperature_accuracy)

        # scans: noisy tissue everywhere and a lesion's 2x2 square in each lung (the painful side's is the
        # finding, the other one incidental), or both lesions' 4x4 zooms side by side
        side = rng.randint(u[:, d.side], 2)
        other_finding = rng.randint(u[:, d.other_finding], p.num_findings)
        pattern = rng.randint(u[:, d.pattern], NOISE_PATTERNS)
        lesion_variant = rng.randint(u[:, d.lesion_variant], LESION_VARIANTS)[:, None]
        tops = 1 + torch.stack([rng.randint(u[:, d.top], _LESION_ROWS), rng.randint(u[:, d.other_top], _LESION_ROWS)], dim=1)
        sides = torch.stack([side, 1 - side], dim=1)  # [B, 2]: the finding's lung, the incidental one's
        corners = tops * GRID + self._lung_columns[sides]
        shapes = torch.stack([finding, other_finding], dim=1)
        shown = torch.where(clear[:, None], shapes, p.num_findings)  # the hazy opacity is "finding" F
        lung_shapes = torch.where(side[:, None] == 0, shapes, shapes.flip(1))  # [left lung's, right lung's]

        phrasing = rng.randint(u[:, d.phrasing], PHRASINGS)
        intro = self._intro_row(
            phrasing[:, 0],
            rng.randint(u[:, d.age], len(AGES)),
            rng.randint(u[:, d.symptom], len(SYMPTOMS)),
            rng.randint(u[:, d.days], len(DAYS)),
        )
        history = self._history_row(phrasing, side, fever)
        zeros = torch.zeros(batch, dtype=torch.int64, device=dev)
        state = DiagnoseState(
            elapsed=zeros,
            finding=finding,
            other_finding=other_finding,
            side=side,
            infection=infection,
            clear=clear,
            fever=fever,
            blood_high=blood_high,
            temperature_high=temperature_high,
            revealed=torch.zeros(batch, NUM_TESTS, dtype=torch.bool, device=dev),
            scan_image=pattern,
            zoom_image=self._zoom_index(pattern, lung_shapes, lesion_variant[:, 0]),
            lesion_corner=corners,
            lesion_look=shown * LESION_VARIANTS + lesion_variant,
            phrasing=phrasing,
            intro=intro,
            history=history,
            text=self._compose_text(intro, history, zeros) if compose_text else phrasing[:, :0],
            patient=zeros,
            last_action=zeros - 1,
            last_reward=torch.zeros(batch, dtype=torch.float32, device=dev),
            end_reason=zeros,
        )
        return state

    def _transition(self, state: DiagnoseState, actions: Tensor, step_key: Tensor):
        p = self.params
        is_test = actions < NUM_TESTS
        test = torch.where(is_test, actions, -1)
        revealed = state.revealed | (torch.arange(NUM_TESTS, device=self.device) == test[:, None])
        condition = 2 * state.finding + (~state.infection).to(torch.int64)
        diagnosed = ~is_test
        correct = diagnosed & (actions - NUM_TESTS == condition)
        reward = torch.where(is_test, -p.test_cost, torch.where(correct, 1.0, -1.0)).to(torch.float32)
        end_reason = torch.where(correct, 1, torch.where(diagnosed, 2, 0))  # (the engine marks the step limit)
        terminated = diagnosed & (state.patient + 1 >= p.patients)
        next_state = dataclasses.replace(
            state,
            revealed=revealed,
            patient=state.patient + diagnosed.to(torch.int64),
            last_action=actions.clone(),
            last_reward=reward.clone(),  # autoreset writes fresh rows into the state in place
            end_reason=end_reason.clone(),
        )
        # the next patient of the shift comes in where a case closed (drawn from this step's key); a
        # random policy closes a case in most rows each step, so every row draws one and a mask merges
        # them (one static-shape program, no sub-batch)
        if p.patients > 1:  # (with one patient a diagnosis ends the episode)
            next_patient = diagnosed & ~terminated
            fresh = self._initial_state(step_key, compose_text=False)
            for f in dataclasses.fields(next_state):
                if f.name not in _EPISODE_FIELDS and f.name != "text":
                    old, new = getattr(next_state, f.name), getattr(fresh, f.name)
                    setattr(next_state, f.name, torch.where(next_patient.view(-1, *[1] * (old.dim() - 1)), new, old))
        next_state.text = self._compose_text(next_state.intro, next_state.history, self._results_row(next_state, next_state.revealed))
        info = {"diagnosed": diagnosed, "correct": correct, "tested": is_test, "test_ordered": test, "end_reason": end_reason}
        return next_state, reward, terminated, info

    def _observe(self, state: DiagnoseState) -> dict[str, Tensor]:
        # a pre-rendered image (one grey channel, gathered three times): the first scan's background with its
        # lesions pasted on, or the whole detailed scan (which takes no paste)
        zoomed = state.revealed[:, Exam.SCAN]
        batch = zoomed.shape[0]
        buffer, images = self._paster.new_images(batch)
        index = torch.where(zoomed, state.zoom_image, state.scan_image)
        torch.index_select(self._scans, 0, index.repeat_interleave(3), out=images.view(3 * batch, images.shape[-1] ** 2))
        self._paster.paste(buffer, self._corner_position[state.lesion_corner], state.lesion_look, skip=zoomed)
        return {"image": images, "text": state.text.clone()}

    def _action_mask(self, state: DiagnoseState) -> Tensor:
        """bool[B, A]: a test only while not yet ordered for this patient (again it costs and reveals nothing);
        every diagnosis always."""
        diagnoses = torch.ones((state.revealed.shape[0], self.params.num_conditions), dtype=torch.bool, device=self.device)
        return torch.cat([~state.revealed, diagnoses], dim=1)

    def _decision_info(self, state: DiagnoseState) -> dict[str, Tensor]:
        return {
            "condition": 2 * state.finding + (~state.infection).to(torch.int64),
            "finding": state.finding.clone(),
            "side": state.side.clone(),
            "infection": state.infection.clone(),
            "revealed": state.revealed.clone(),
            "posterior": self.posterior(state),
            "patient": state.patient.clone(),
        }

    def reference_policies(self) -> dict[str, PolicyFactory]:
        """``greedy``: :class:`ScriptedPolicy` (reads the exact posterior); ``oracle``: :class:`TrueConditionPolicy`."""
        return {"greedy": lambda seed: ScriptedPolicy(self), "oracle": lambda seed: TrueConditionPolicy()}

    # ------------------------------------------------------------------ rendering
    def describe_truth(self, state: DiagnoseState) -> str:
        """The current patient's true condition, the lesion that causes it and the incidental one (one row)."""
        finding, other, infection = int(state.finding[0]), int(state.other_finding[0]), bool(state.infection[0])
        patient = min(int(state.patient[0]), self.params.patients - 1)  # the shift's last diagnosis counts one past it
        return (
            f"patient {patient + 1}/{self.params.patients} has {self.conditions[2 * finding + (0 if infection else 1)]} "
            f"({self.findings[finding]} in the {SIDES[int(state.side[0])]} lung, {'infection' if infection else 'no infection'}; "
            f"incidental {self.findings[other]} in the other lung)"
        )

    def _frame_lines(self, state: DiagnoseState, index: int) -> list[str]:
        """Text panel of the replay frame: the record, the step and return, the last action, the truth."""
        last = int(state.last_action[0])
        end = int(state.end_reason[0])
        lines = [
            f'"{self.decode(state.text[0])}"',
            f"patient {int(state.patient[0]) + 1}/{self.params.patients}   step {int(state.elapsed[0])}/{self.max_episode_steps}"
            f"   return {float(self.episode_return[index]):.2f}",
            "start of shift" if last < 0 else f"last: {self.action_names[last]}, reward {float(state.last_reward[0]):.2f}"
            + ("" if end == 0 else f" ({self.describe_end(end)})"),
            f"truth: {self.describe_truth(state)}",
        ]
        return lines


# ---------------------------------------------------------------------------- reference policies
class ScriptedPolicy:
    """Orders the detailed scan while the lesion's shape is unknown, then the blood count and the temperature
    chart while no condition has posterior ``>= confidence``, then diagnoses the most probable condition. It
    reads ``info["posterior"]`` (what a perfect reader of image and text knows), never the hidden condition."""

    def __init__(self, env: Diagnose, confidence: float = 0.9):
        self.num_findings = env.params.num_findings
        self.confidence = confidence

    def act(self, obs: Observation, info: Info) -> Tensor:
        posterior, revealed = info["posterior"], info["revealed"]
        finding_known = posterior.view(-1, self.num_findings, 2).sum(dim=2).amax(dim=1) > 0.999
        best, condition = posterior.max(dim=1)
        unsure = best < self.confidence
        diagnose = condition + NUM_TESTS
        action = torch.where(unsure & ~revealed[:, Exam.TEMPERATURE], int(Exam.TEMPERATURE), diagnose)
        action = torch.where(unsure & ~revealed[:, Exam.BLOOD], int(Exam.BLOOD), action)
        return torch.where(~finding_known & ~revealed[:, Exam.SCAN], int(Exam.SCAN), action)

    def update(self, info: Info, done: Tensor) -> None:
        pass


class TrueConditionPolicy:
    """The oracle: diagnoses the true condition (``info["condition"]``) at once, ordering no test."""

    def act(self, obs: Observation, info: Info) -> Tensor:
        return info["condition"] + NUM_TESTS

    def update(self, info: Info, done: Tensor) -> None:
        pass
