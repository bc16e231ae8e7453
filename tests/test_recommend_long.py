"""Recommend's long-term setting (clickbait vs genuine items, trust, sessions) and its planner reference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import mmrl
from mmrl.agents.reference import make_reference_policy, policy_names
from mmrl.core import rng
from mmrl.core.planner import RolloutPlanner
from mmrl.envs.recommend import MIN_TILE, Intent, Recommend
from mmrl.episodes import run_episodes
from tests.conftest import env_options

LONG = env_options("recommend_long")


def test_the_config_is_the_long_term_setting() -> None:
    env = Recommend(**LONG)
    assert env.params.long_term and env.params.clickbait_appeal > 0 and env.params.trust_levels > 0
    assert env.params.sessions > 1 and env.params.slate_size >= 8
    assert {"myopic", "careful", "planner"} <= set(policy_names(env))
    assert "planner" not in policy_names(Recommend())  # the short-term task is a contextual bandit


def test_the_short_term_task_keeps_its_vocabulary() -> None:
    short, long = Recommend(), Recommend(**{**LONG, "num_categories": 8, "num_colours": 8})
    assert list(long.vocabulary.words[: len(short.vocabulary)]) == list(short.vocabulary.words)
    assert "letdown" in long.vocabulary and "letdown" not in short.vocabulary


@pytest.mark.parametrize(
    "options, smallest",
    [(dict(slate_size=6, image_size=32), 36), (dict(slate_size=16, image_size=16), 48), (dict(slate_size=4, image_size=20), 24)],
)
def test_thumbnails_too_small_to_read_fail_naming_the_smallest_size(options: dict, smallest: int) -> None:
    with pytest.raises(ValueError, match=rf"too small .* use image_size >= {smallest}"):
        Recommend(**options)
    env = Recommend(**{**options, "image_size": smallest})
    assert env.params.tile >= MIN_TILE


def test_image_size_has_an_upper_bound() -> None:
    with pytest.raises(ValueError, match=r"image_size must be in \[16, 512\]; got 4096"):
        Recommend(image_size=4096)


@pytest.mark.parametrize("bad, match", [
    (dict(sessions=0), r"sessions must be in \[1, 100\]; got 0"),
    (dict(trust_levels=-1), r"trust_levels must be in \[0, 100\]; got -1"),
    (dict(clickbait_appeal=3, catalog="/tmp"), "needs the procedural catalogue"),
])  # fmt: skip
def test_bad_long_term_options(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Recommend(**bad)


def test_each_slate_offers_the_design_genuine_and_clickbait() -> None:
    """Every (wished/decoy category) x (wished/decoy colour) cell is on the slate once genuine and once clickbait,
    in shuffled slots: the image alone cannot tell the wish from the decoys (each cell looks alike), the text alone
    cannot tell which slot holds it, and the badge alone says only which items are clickbait."""
    env = Recommend(num_envs=256, **LONG)
    _, info = env.reset(seed=0)
    for _ in range(3):
        s = env.state
        items = s.slate[:, :8]
        category, colour = env._item_category[items], env._item_colour[items]
        wished = (category == s.want_category[:, None]).long() * 2 + (colour == s.want_colour[:, None]).long()
        bait = env._item_clickbait[items].long()
        counts = torch.nn.functional.one_hot(wished * 2 + bait, 8).sum(dim=1)
        assert bool((counts == 1).all())
        assert torch.equal(info["clickbait"], env._item_clickbait[s.slate])
        _, _, _, _, info = env.step(torch.randint(env.single_action_space.n, (256,), generator=torch.Generator().manual_seed(1)))
    assert len({tuple(row) for row in bait.tolist()}) > 10  # the genuine and clickbait slots move around


def test_the_badge_is_all_that_tells_a_clickbait_twin_from_its_item() -> None:
    catalog = Recommend(**LONG).catalog
    half = catalog.num_items // 2
    genuine, bait = catalog.thumbnails[:half], catalog.thumbnails[half:]
    assert (catalog.category[:half] == catalog.category[half:]).all() and catalog.clickbait[half:].all()
    differs = (genuine != bait).any(axis=(0, 1))  # pixels where any twin pair differs
    rows, cols = np.nonzero(differs)
    assert rows.min() >= catalog.tile * 3 // 4 - 1 and cols.min() >= catalog.tile * 3 // 4 - 1  # the corner badge


def _reference_step(env: Recommend, s: dict, action: int, u: np.ndarray) -> dict:
    """One row's step of the long-term user model, written out per row (clicks, trust, sessions, patience)."""
    p, d = env.params, env._step_draws
    item = s["slate"][action]
    clicked = u[d.click] < s["slot_click"][action]
    bait = bool(env.catalog.clickbait[item])
    patience = min(s["patience"] + 1, p.patience + 2) if clicked else s["patience"] - 1
    trust = s["trust"]
    if clicked:
        trust = min(max(trust + (-p.betrayal if bait else 1), 0), p.trust_levels)
    session_elapsed = s["session_elapsed"] + 1
    session_over = patience <= 0 or session_elapsed >= p.session_steps
    comes_back = u[d.session][0] * p.trust_levels < trust
    returned = session_over and s["session"] + 1 < p.sessions and comes_back
    if returned:
        patience = p.patience + min(int(u[d.session][2] * 3), 2)
        session_elapsed = 0
    return {
        "clicked": bool(clicked), "clickbait_click": bool(clicked and bait), "trust": trust, "patience": patience,
        "session": s["session"] + int(returned), "session_elapsed": session_elapsed, "returned": bool(returned),
        "terminated": bool(session_over and not returned),
    }  # fmt: skip


def test_long_term_dynamics_match_a_per_row_loop_reference() -> None:
    env = Recommend(num_envs=64, **LONG)
    env.reset(seed=3)
    generator = torch.Generator().manual_seed(0)
    checked = {"returned": 0, "clickbait_click": 0, "terminated": 0}
    for _ in range(40):
        before = dataclasses.replace(env.state)
        u = rng.uniform(rng.step_key(env._episode_key, before.elapsed), env._step_draws.count).numpy()
        actions = torch.randint(env.single_action_space.n, (64,), generator=generator)
        _, reward, terminated, _, info = env.step(actions, autoreset=False)
        after = env.state
        for row in range(64):
            s = {f.name: getattr(before, f.name)[row].tolist() for f in dataclasses.fields(before)}
            want = _reference_step(env, s, int(actions[row]), u[row])
            got = {
                "clicked": bool(info["clicked"][row]), "clickbait_click": bool(info["clickbait_click"][row]),
                "trust": int(after.trust[row]), "patience": int(after.patience[row]), "session": int(after.session[row]),
                "session_elapsed": int(after.session_elapsed[row]), "returned": bool(info["returned"][row]),
                "terminated": bool(terminated[row]),
            }  # fmt: skip
            assert got == want, (row, s["trust"], s["session"])
            assert float(reward[row]) == float(want["clicked"])
            for key in checked:
                checked[key] += int(want[key])
        env.reset(mask=env._needs_reset)
    assert all(count > 5 for count in checked.values()), checked


def test_distrust_lowers_every_click_and_trust_above_the_start_adds_none() -> None:
    """A per-row loop reference of the affinity's trust term: ``trust_weight`` points off every item per level below
    the start, nothing above it (a trusted shopper still wants what they asked for: the wish stays decisive)."""
    env = Recommend(num_envs=32, **LONG)
    env.reset(seed=5)
    p, start = env.params, env.params.trust_levels // 2
    for trust in range(p.trust_levels + 1):
        state = dataclasses.replace(env.state, trust=torch.full_like(env.state.trust, trust))
        got = env._affinity(state, state.slate)
        neutral = env._affinity(dataclasses.replace(state, trust=torch.full_like(state.trust, start)), state.slate)
        for row in range(32):
            for slot in range(p.slate_size):
                want = int(neutral[row, slot]) - p.trust_weight * max(start - trust, 0)
                assert int(got[row, slot]) == want, (trust, row, slot)
    # at full trust a category-only match is still far less clickable than the wished item (within budget)
    state = dataclasses.replace(env.state, trust=torch.full_like(env.state.trust, p.trust_levels))
    clicks = env._with_slot_values(state).slot_click
    items = state.slate
    exact = (env._item_category[items] == state.want_category[:, None]) & (env._item_colour[items] == state.want_colour[:, None])
    category_only = (env._item_category[items] == state.want_category[:, None]) & ~exact
    plain = ~env._item_clickbait[items] & (env._item_tier[items] <= state.budget[:, None])  # genuine, affordable
    assert float(clicks[exact & plain].mean()) > float(clicks[category_only & plain].mean()) + 0.4


def test_every_utterance_opens_with_the_mood_that_trust_sets() -> None:
    from mmrl.envs.recommend import MOODS

    env = Recommend(num_envs=256, **LONG)
    obs, info = env.reset(seed=2)
    assert {env.vocabulary.words[int(w)] for w in obs["text"][:, 0]} == {"calm"}
    seen = set()
    for _ in range(12):
        actions = torch.where(info["clickbait"], info["expected_reward"], -1.0).argmax(dim=1)  # clickbait: trust falls
        obs, _, terminated, truncated, info = env.step(actions)
        for row in torch.nonzero(~(terminated | truncated)).flatten()[::7].tolist():  # (a finished row shows a new episode)
            level = round((len(MOODS) - 1) * int(info["trust"][row]) / env.params.trust_levels)
            assert env.vocabulary.words[int(obs["text"][row, 0])] == MOODS[level]
            seen.add(level)
    assert {0, 2} <= seen
    assert not set(MOODS) & set(Recommend().vocabulary.words)  # the short-term task's text is unchanged


def test_feedback_tells_disappointment_and_trust_on_return() -> None:
    env = Recommend(num_envs=512, **LONG)
    obs, info = env.reset(seed=1)
    disappointed = {w for t in env._text_table[Intent.DISAPPOINTED * 3 : Intent.DISAPPOINTED * 3 + 3, 0] for w in t.tolist() if w}
    seen = {"disappointed": 0, "back": 0}
    for _ in range(30):
        actions = torch.where(info["clickbait"], info["expected_reward"], -1.0).argmax(dim=1)  # clickbait only
        obs, _, _, _, info = env.step(actions)
        for row in torch.nonzero(info["clickbait_click"] & (info["session"] == env.state.session)).flatten()[:20].tolist():
            assert set(obs["text"][row].tolist()) & disappointed, env.decode(obs["text"][row])
            seen["disappointed"] += 1
        for row in torch.nonzero(info["returned"]).flatten()[:20].tolist():
            text = env.decode(obs["text"][row]).split(" ", 1)[1]  # after the mood word
            assert text.startswith(("back", "hi again", "i am back")), text
            seen["back"] += 1
    assert seen["disappointed"] > 20 and seen["back"] > 0, seen


def test_planner_matches_exhaustive_search_on_a_tiny_configuration() -> None:
    """Two steps left: the best first action is argmax over a0 of r0 + E[max_a1 E[r1]]. Exhaustive search computes
    it from every first action and the true expected rewards of the second step; the planner (myopic base, which
    is optimal at the last step) from sampled rollouts. With many rollouts they agree."""
    options = dict(slate_size=4, image_size=24, max_steps=2, clickbait_appeal=3, trust_levels=4, trust_weight=3, betrayal=2,
                   num_categories=2, num_colours=2)  # fmt: skip
    env = Recommend(num_envs=12, **options)
    env.reset(seed=4)
    samples, n = 3000, env.single_action_space.n
    planner = RolloutPlanner(env, rollouts=samples)
    estimate = planner.action_values()
    # exhaustive over actions; the chance of each first step averaged over the same number of draws
    copies = torch.arange(12).repeat_interleave(n * samples)
    first = torch.arange(n).repeat_interleave(samples).repeat(12)
    key = rng.hash32(env._episode_key[copies] ^ rng.hash32(torch.arange(samples).repeat(12 * n) + 99))
    state = mmrl.core.batched_env.select_rows(env.state, copies)
    after, r0, terminated, _ = env._transition(state, first, rng.step_key(key, state.elapsed))
    best_next = env._decision_info(after)["expected_reward"].amax(dim=1)
    exact = (r0 + torch.where(terminated, 0.0, best_next)).view(12, n, samples).mean(dim=2)
    assert torch.allclose(estimate, exact, atol=0.06), (estimate, exact)
    gap = exact.topk(2, dim=1).values
    clear = (gap[:, 0] - gap[:, 1]) > 0.12
    assert bool(clear.any())
    assert torch.equal(estimate.argmax(dim=1)[clear], exact.argmax(dim=1)[clear])


def test_planner_beats_myopic_by_a_wide_margin_and_careful_is_between() -> None:
    env = mmrl.make_batched("mmrl/Recommend-v0", num_envs=96, **LONG)
    returns = {}
    for name in ("random", "myopic", "careful", "planner"):
        policy = make_reference_policy(name, env, seed=0)
        if name == "planner":
            policy.rollouts = 4  # CI-sized; BENCHMARKS.md has the full reference (8 rollouts, 2,000 episodes)
        returns[name] = run_episodes(env, policy.act, seed=0, update=policy.update).mean_return
    assert returns["random"] < returns["myopic"] < returns["careful"]
    assert returns["planner"] >= 1.5 * returns["myopic"], returns
