"""Tutor (#18): the engine contract on several option sets, the student model against a per-row loop reference,
bad options, the planner against exhaustive search on a tiny configuration, and the reference policies' order."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

import mmrl
from mmrl.agents.reference import make_reference_policy, policy_names
from mmrl.core import rng
from mmrl.core.planner import RolloutPlanner
from mmrl.envs.tutor import (
    ANSWERS, GOALS, LEARN_BY_GAP, LEVEL_WORDS, LEVELS, MIN_TILE, P_RIGHT, PREREQUISITES, READY_LEVEL, REMARKS, SKILLS,
    ZPD_TARGET, Answer, CurriculumTutor, Remark, Tutor,
)  # fmt: skip
from mmrl.episodes import run_episodes
from mmrl.testing import CONTRACT_CHECKS, Options
from tests.conftest import env_options

ID = "mmrl/Tutor-v0"
CONFIG = env_options("tutor")
#: option sets beyond the default (tests/test_engine.py runs the contract on the default)
OPTION_SETS = {
    "config": CONFIG,
    "post_test_small": dict(reward="post_test", slate_size=3, num_skills=3, image_size=30, max_steps=12, patience=2),
    "wide_slate": dict(slate_size=8, image_size=40, boredom_streak=2, forget_rate_max=0.3),
}


@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=list(OPTION_SETS))
@pytest.mark.parametrize("check", CONTRACT_CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
def test_contract(options: Options, check) -> None:
    check(ID, options)


def _rollout(seed: int, steps: int = 50) -> list:
    env = Tutor(num_envs=16, **CONFIG)
    obs, _ = env.reset(seed=seed)
    generator, trace = torch.Generator().manual_seed(5), []
    for _ in range(steps):
        assert env.single_observation_space.contains({k: v[3].numpy() for k, v in obs.items()})
        obs, reward, terminated, truncated, _ = env.step(torch.randint(4, (16,), generator=generator))
        trace.append((obs["image"].clone(), obs["text"].clone(), reward.clone(), terminated | truncated))
    return trace


def test_a_seed_replays_its_episodes_and_another_seed_does_not() -> None:
    first, again, other = _rollout(0), _rollout(0), _rollout(1)
    assert all(all(torch.equal(x, y) for x, y in zip(a, b)) for a, b in zip(first, again))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other))
    assert any(bool(step[3].any()) for step in first), "no episode ended: autoreset untested"


# ---------------------------------------------------------------------------- bad options
@pytest.mark.parametrize("bad, match", [
    (dict(slate_size=1), r"slate_size must be in \[2, 8\]; got 1"),
    (dict(num_skills=6), r"num_skills must be in \[2, 5\]; got 6"),
    (dict(reward="grades"), r"reward must be one of \['mastery', 'post_test'\]; got 'grades'"),
    (dict(patience=0), r"patience must be in \[1, 100\]; got 0"),
    (dict(boredom_streak=1), r"boredom_streak must be in \[2, 100\]; got 1"),
    (dict(learn_rate_max=1.5), r"learn_rate_max must be a probability in \[0, 1\]; got 1.5"),
    (dict(forget_rate_min=0.2, forget_rate_max=0.1), r"forget_rate_min must be <= forget_rate_max"),
    (dict(max_steps=0), r"max_steps must be >= 1; got 0"),
    (dict(max_text_length=33), r"max_text_length must be >= 34 \(the standing, 11 tokens for 5 skills, .*got 33"),
    (dict(num_skills=2, max_text_length=24), r"max_text_length must be >= 28 \(the standing, 5 tokens for 2 skills"),
    (dict(image_size=4096), r"image_size must be in \[8, 512\]; got 4096"),
])  # fmt: skip
def test_bad_options_fail_naming_the_value(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Tutor(**bad)


def test_bad_option_types_and_names() -> None:
    with pytest.raises(TypeError, match="option 'slate_size' must be an int; got 2.5"):
        Tutor(slate_size=2.5)
    with pytest.raises(TypeError, match=r"Tutor has no option 'skills'; valid options: \["):
        Tutor(skills=3)


@pytest.mark.parametrize("options, smallest", [
    (dict(image_size=19), 20), (dict(slate_size=8, image_size=29), 30), (dict(slate_size=2, num_skills=2, image_size=19), 20),
])  # fmt: skip
def test_cells_too_small_to_read_fail_naming_the_smallest_size(options: dict, smallest: int) -> None:
    with pytest.raises(ValueError, match=rf"too small .* use image_size >= {smallest}"):
        Tutor(**options)
    assert Tutor(**{**options, "image_size": smallest}).params.tile >= MIN_TILE


# ---------------------------------------------------------------------------- the student model, row by row
def _randint(u: float, high: int) -> int:
    return min(int(np.float32(u) * np.float32(high)), high - 1)


def _words(text: str, skill: str = "", goal: str = "", last: str = "") -> str:
    return text.replace("{skill}", skill).replace("{goal}", goal).replace("{last}", last)


def _reference_step(env: Tutor, s: dict, action: int, u: np.ndarray) -> dict:
    """One row's step of the student model, written out per row with plain Python (the same draws)."""
    p, d = env.params, env._step_draws
    n = p.num_skills
    level = list(s["level"])
    ready = [all(level[q] >= READY_LEVEL for q in PREREQUISITES[k]) for k in range(n)]
    skill, difficulty = s["slate_skill"][action], s["slate_difficulty"][action]
    gap = min(max(difficulty - level[skill] + (0 if ready[skill] else 1), 0), len(P_RIGHT) - 1)
    correct = u[d.correct] < np.float32(P_RIGHT[gap])
    learned = ready[skill] and u[d.learn] < np.float32(LEARN_BY_GAP[gap]) * np.float32(s["learn_rate"])
    forgets = [k != skill and level[k] > 0 and u[d.forget][k] < s["forget_rate"] for k in range(n)]
    new_level = [level[k] - forgets[k] + (k == skill and learned) for k in range(n)]
    streak = s["streak"] + 1 if skill == s["last_skill"] else 1
    bored = streak >= p.boredom_streak
    change = (-1 if gap == 0 or not correct else 1) - bored
    patience = min(s["patience"] + change, s["patience_max"])
    quit = patience <= 0
    path = {s["goal"]}
    for k in reversed(range(n)):  # the goal's ancestors (prerequisites have lower indices)
        if k in path:
            path |= set(PREREQUISITES[k])
    gain = sum(new_level[k] - level[k] for k in path) / LEVELS
    final = quit or s["elapsed"] + 1 >= env.max_episode_steps
    post_test = sum(new_level[k] for k in path) / (LEVELS * len(path)) if final else 0.0
    # the remark: the first that applies
    missing = [q for q in PREREQUISITES[skill] if level[q] < READY_LEVEL]
    wish = (skill + 1 + _randint(u[d.wish], n - 1)) % n
    remarks = [
        (not ready[skill], Remark.NOT_READY, missing[0] if missing else skill),
        (learned, Remark.LEARNED, skill),
        (gap == 0, Remark.TOO_EASY, skill),
        (bored, Remark.BORED, wish),
        (any(forgets), Remark.FORGOT, forgets.index(True) if any(forgets) else skill),
        (not correct and gap >= 2, Remark.TOO_HARD, skill),
        (True, Remark.OKAY, skill),
    ]
    remark, named = next((r, k) for applies, r, k in remarks if applies)
    t = u[d.text]
    answer = Answer.RIGHT if correct else Answer.WRONG
    # what the student rates each skill: the level after its last exercise (forgetting goes unnoticed until then)
    assessed = [new_level[k] if k == skill else s["assessed"][k] for k in range(n)]
    text = " . ".join([
        " ".join(f"{SKILLS[k]} {LEVEL_WORDS[assessed[k]]}" for k in range(n)),
        _words(ANSWERS[answer][_randint(t[0], 3)], last=SKILLS[skill]),
        _words(REMARKS[remark][_randint(t[1], 3)], skill=SKILLS[named]), _words(GOALS[_randint(t[2], 3)], goal=SKILLS[s["goal"]]),
    ])  # fmt: skip
    # the next slate: per slot, from the goal's path (in skill order) with probability path_share
    k_slots, w = p.slate_size, u[d.slate]
    on_path = sorted(path)
    slate = [
        (on_path[_randint(w[k_slots + j], len(on_path))] if w[j] < np.float32(p.path_share) else _randint(w[k_slots + j], n),
         1 + _randint(w[2 * k_slots + j], LEVELS))
        for j in range(k_slots)
    ]  # fmt: skip
    return {
        "level": new_level, "patience": patience, "streak": streak, "terminated": quit, "correct": bool(correct),
        "learned": bool(learned), "reward": gain if p.reward == "mastery" else post_test, "post_test": post_test,
        "text": text, "slate": slate, "assessed": assessed,
    }  # fmt: skip


@pytest.mark.parametrize("options", [CONFIG, dict(reward="post_test", num_skills=4, slate_size=5, max_steps=15, forget_rate_max=0.4)])
def test_student_model_matches_a_per_row_loop_reference(options: dict) -> None:
    env = Tutor(num_envs=64, **options)
    env.reset(seed=3)
    generator = torch.Generator().manual_seed(0)
    seen = {"learned": 0, "terminated": 0, "forgot": 0, "bored": 0, "not ready": 0, "rated above the truth": 0}
    for _ in range(30):
        before = dataclasses.replace(env.state)
        u = rng.uniform(rng.step_key(env._episode_key, before.elapsed), env._step_draws.count).numpy()
        actions = torch.randint(env.single_action_space.n, (64,), generator=generator)
        obs, reward, terminated, _, info = env.step(actions, autoreset=False)
        after = env.state
        for row in range(64):
            s = {f.name: getattr(before, f.name)[row].tolist() for f in dataclasses.fields(before)}
            want = _reference_step(env, s, int(actions[row]), u[row])
            got = {
                "level": after.level[row].tolist(), "patience": int(after.patience[row]), "streak": int(after.streak[row]),
                "terminated": bool(terminated[row]), "correct": bool(info["correct"][row]), "learned": bool(info["learned"][row]),
                "reward": float(reward[row]), "post_test": float(info["post_test"][row]), "text": env.decode(obs["text"][row]),
                "slate": list(zip(after.slate_skill[row].tolist(), after.slate_difficulty[row].tolist())),
                "assessed": after.assessed[row].tolist(),
            }  # fmt: skip
            assert got.keys() == want.keys()
            for key in got:
                if key in ("reward", "post_test"):
                    assert got[key] == pytest.approx(want[key], abs=1e-6), (key, row, s)
                else:
                    assert got[key] == want[key], (key, row, s)
            seen["learned"] += want["learned"]
            seen["terminated"] += want["terminated"]
            seen["forgot"] += "forgot" in want["text"] or "remember" in want["text"] or "slipping" in want["text"]
            seen["bored"] += want["streak"] >= env.params.boredom_streak
            seen["not ready"] += " yet" in want["text"] or "lost" in want["text"] or "confuses" in want["text"]
            seen["rated above the truth"] += want["assessed"] != want["level"]
        env.reset(mask=env._needs_reset)
    assert all(count >= 5 for count in seen.values()), seen


# ---------------------------------------------------------------------------- what each modality carries
def _standing(env: Tutor, text: torch.Tensor) -> list[list[int]]:
    """The level each skill is rated at by the text's first ``2 * num_skills`` words."""
    words = [env.decode(row).split()[: 2 * env.params.num_skills] for row in text]
    assert all(w[0::2] == list(env.skills) for w in words)
    return [[LEVEL_WORDS.index(word) for word in w[1::2]] for w in words]


def test_the_image_is_the_slate_and_the_text_is_the_student() -> None:
    """The image shows the slate and nothing else (equal slates, equal images, whatever the goal or the student); the
    text names skills but never a slot or a difficulty, and carries the goal and the student's own rating of each
    skill: the level after its last exercise (or the placement at the start), blind to forgetting until then."""
    env = Tutor(num_envs=2048, **{**CONFIG, "forget_rate_max": 0.3})
    obs, info = env.reset(seed=0)
    goal, skills = info["goal"], info["slate_skill"]
    for g in env._goals.tolist():
        shown = torch.bincount(skills[goal == g].flatten(), minlength=env.params.num_skills)
        assert bool((shown > 0).all()), (g, shown)  # off-path skills too: the slate does not give the goal away
    assert _standing(env, obs["text"][:50]) == info["level"][:50].tolist()
    generator = torch.Generator().manual_seed(0)
    stale = 0
    for _ in range(6):
        for row in range(20):
            words = env.decode(obs["text"][row]).split()
            assert SKILLS[int(env.state.goal[row])] in words
            assert not set(words) & {"slot", "1", "2", "3", "difficulty"}
        slate = torch.stack([env.state.slate_skill, env.state.slate_difficulty], dim=1).flatten(1)
        _, first = np.unique(slate.numpy(), axis=0, return_inverse=True)
        for key in range(int(first.max()) + 1):  # rows with one slate show one image
            same = torch.from_numpy(np.flatnonzero(first.reshape(-1) == key))
            assert bool((obs["image"][same] == obs["image"][same[:1]]).all())
        assert len({bytes(image.numpy()) for image in obs["image"]}) == int(first.max()) + 1
        before = torch.tensor(_standing(env, obs["text"]))
        obs, _, _, _, step_info = env.step(torch.randint(4, (2048,), generator=generator), autoreset=False)
        rated = torch.tensor(_standing(env, obs["text"]))
        practised = torch.nn.functional.one_hot(env.state.last_skill, env.params.num_skills).bool()
        assert torch.equal(rated[practised], env.state.level[practised])  # the exercise shows where they stand
        assert torch.equal(rated[~practised], before[~practised])  # the others keep their rating
        stale += int((rated != env.state.level).any(dim=1).sum())
        env.reset(mask=env._needs_reset)
        obs = env._observe(env.state)
    assert stale > 100  # forgetting goes unnoticed until the skill is practised again


def test_render_shows_the_mastery_bars_below_the_observation() -> None:
    env = Tutor(num_envs=2, **CONFIG)
    obs, _ = env.reset(seed=0)
    frame = env.render_frame(1)
    size = env.params.image_size
    assert frame.shape[0] > 4 * size + 18 * env.params.num_skills  # the bars below the enlarged image
    bars = frame[4 * size : 4 * size + 18 * (env.params.num_skills + 1), : 4 * size]
    assert bars.max() > 200  # labels and filled segments drawn


# ---------------------------------------------------------------------------- reference policies
def test_reference_policies_by_the_shared_names() -> None:
    env = Tutor(num_envs=4, **CONFIG)
    assert {"random", "myopic", "oracle", "curriculum", "planner"} <= set(policy_names(env))
    assert env.value_key == "p_right"


def test_myopic_drills_what_the_student_knows_and_the_planner_teaches() -> None:
    env = mmrl.make_batched(ID, num_envs=96, **CONFIG)
    returns, easy = {}, {}
    for name in ("random", "myopic", "curriculum", "planner"):
        policy = make_reference_policy(name, env, seed=0)
        if name == "planner":
            policy.rollouts = 4  # CI-sized; BENCHMARKS.md has the full reference (8 rollouts, 2,000 episodes)
        stats = run_episodes(env, policy.act, seed=0, update=policy.update, sum_keys=("too_easy",))
        returns[name], easy[name] = stats.mean_return, float(stats.sums["too_easy"].sum() / stats.lengths.sum())
    assert returns["myopic"] < returns["curriculum"] < returns["planner"], returns
    assert returns["planner"] >= 1.3 * returns["myopic"], returns
    assert easy["myopic"] > easy["curriculum"], easy


def test_curriculum_aims_at_the_first_open_skill_of_the_path() -> None:
    info = {
        "level": torch.tensor([[3, 1, 0], [1, 0, 0]]), "ready": torch.tensor([[True, True, True], [True, False, False]]),
        "path": torch.tensor([[True, True, False], [True, True, False]]),
        "slate_skill": torch.tensor([[0, 1, 1, 2], [1, 2, 0, 0]]), "slate_difficulty": torch.tensor([[1, 3, 2, 1], [1, 1, 3, 2]]),
        "p_right": torch.tensor([[0.95, 0.4, 0.75, 0.75], [0.4, 0.4, 0.15, 0.75]]),
    }  # fmt: skip
    # row 0: adding (level 1) is open: difficulty 2 (0.75) beats 3 (0.4); shapes is off the path. Row 1: counting.
    assert CurriculumTutor.choose(info).tolist() == [2, 3]
    assert abs(0.75 - ZPD_TARGET) < abs(0.95 - ZPD_TARGET) and abs(0.4 - ZPD_TARGET) < abs(0.95 - ZPD_TARGET)


# ---------------------------------------------------------------------------- the planner against exhaustive search
TINY = dict(num_skills=2, slate_size=2, image_size=20, max_steps=3, patience=100, learn_rate_min=0.6, learn_rate_max=0.6,
            forget_rate_max=0.0)  # fmt: skip
_SLATES = [(combo, 1 / 36) for combo in itertools.product(itertools.product(range(2), range(1, LEVELS + 1)), repeat=2)]


def _learn_prob(level: tuple[int, int], skill: int, difficulty: int, rate: float) -> float:
    ready = all(level[q] >= READY_LEVEL for q in PREREQUISITES[skill])
    gap = min(max(difficulty - level[skill] + (0 if ready else 1), 0), len(P_RIGHT) - 1)
    return LEARN_BY_GAP[gap] * rate if ready else 0.0


def _curriculum(level: tuple[int, int], slate: tuple) -> int:
    n = 2
    ready = [torch.tensor([all(level[q] >= READY_LEVEL for q in PREREQUISITES[k]) for k in range(n)])]
    gaps = [min(max(d - level[s] + (0 if ready[0][s] else 1), 0), 4) for s, d in slate]
    info = {"level": torch.tensor([level]), "ready": ready[0][None], "path": torch.ones(1, n, dtype=torch.bool),
            "slate_skill": torch.tensor([[s for s, _ in slate]]), "p_right": torch.tensor([[P_RIGHT[g] for g in gaps]])}  # fmt: skip
    return int(CurriculumTutor.choose(info)[0])


def _value(level: tuple[int, int], slate: tuple, steps: int, rate: float, policy: str, memo: dict) -> list[float]:
    """Expected return of each action with ``steps`` steps left, then ``policy`` (``best``: the optimum), exactly:
    over learning and every next slate (forgetting off, patience too large to run out)."""
    key = (level, slate, steps, policy)
    if key in memo:
        return memo[key]
    values = []
    for skill, difficulty in slate:
        learn = _learn_prob(level, skill, difficulty, rate)
        value = learn / LEVELS
        if steps > 1:
            for learned, chance in ((True, learn), (False, 1 - learn)):
                if chance == 0:
                    continue
                after = tuple(v + (k == skill and learned) for k, v in enumerate(level))
                for next_slate, p_slate in _SLATES:
                    q = _value(after, next_slate, steps - 1, rate, policy, memo)
                    value += chance * p_slate * (max(q) if policy == "best" else q[_curriculum(after, next_slate)])
        values.append(value)
    memo[key] = values
    return values


def test_planner_matches_exhaustive_search_on_a_tiny_configuration() -> None:
    """Two skills, two slots, three steps, learning the only chance: the planner's rollouts estimate the exact value
    of each first action followed by the curriculum (computed by enumerating every outcome and slate), and its choice
    is the exhaustive optimum wherever that is clear."""
    env = Tutor(num_envs=24, **TINY)
    env.reset(seed=1)
    rate = float(env.state.learn_rate[0])
    planner = RolloutPlanner(env, base=CurriculumTutor.choose, rollouts=3000)
    estimate = planner.action_values()
    memo: dict = {}
    exact, best = [], []
    for row in range(24):
        level = tuple(env.state.level[row].tolist())
        slate = tuple(zip(env.state.slate_skill[row].tolist(), env.state.slate_difficulty[row].tolist()))
        exact.append(_value(level, slate, 3, rate, "curriculum", memo))
        best.append(_value(level, slate, 3, rate, "best", memo))
    exact_t, best_t = torch.tensor(exact), torch.tensor(best)
    assert torch.allclose(estimate, exact_t.float(), atol=0.03), (estimate, exact_t)
    planner.rollouts = 400
    chosen = planner.act({}, env._decision_info(env.state))
    top = best_t.topk(2, dim=1).values
    clear = (top[:, 0] - top[:, 1]) > 0.05
    assert int(clear.sum()) >= 5
    assert torch.equal(chosen[clear], best_t.argmax(dim=1)[clear]), (chosen, best_t)


@pytest.mark.slow
def test_compiled_tutor_replays_eager_episodes() -> None:
    """``compile=True`` gives the same episodes (30-60 s of compilation, so only under ``-m slow``)."""
    from tests.test_compile import _assert_compiled_replays_eager

    _assert_compiled_replays_eager(ID, steps=70)
