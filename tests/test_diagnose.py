"""Diagnose: the pair design (image and text each leave a question open), the evidence model and its
posterior (against a slow reference), tests and diagnoses, the shift of patients, the text, the
options, and the reference policies."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from mmrl.agents.reference import make_reference_policy
from mmrl.envs.diagnose import CONDITIONS, NUM_TESTS, PHRASINGS, SENTENCES, Diagnose, Sentence, Exam
from mmrl.episodes import run_episodes


def _step(env: Diagnose, action: int):
    return env.step(torch.full((env.num_envs,), action, dtype=torch.int64))


# ---------------------------------------------------------------------------- the pair design
def _with_infection_flipped(state):
    """The other member of each row's pair: same finding and scan, infection and its evidence flipped."""
    return dataclasses.replace(
        state, infection=~state.infection, fever=~state.fever, blood_high=~state.blood_high,
        temperature_high=~state.temperature_high,
    )


def _full_record(env: Diagnose, state) -> torch.Tensor:
    """The text of ``state`` with every test ordered."""
    everything = torch.ones(state.finding.shape[0], NUM_TESTS, dtype=torch.bool)
    history = env._history_row(state.phrasing, state.side, state.fever)
    return env._compose_text(state.intro, history, env._results_row(state, everything))


def test_scan_shows_the_finding_and_never_the_infection() -> None:
    env = Diagnose(num_envs=256, num_findings=4)
    env.reset(seed=0)
    state = env.state
    assert torch.equal(env._observe(state)["image"], env._observe(_with_infection_flipped(state))["image"])
    zoomed = dataclasses.replace(state, revealed=torch.ones(256, NUM_TESTS, dtype=torch.bool))
    assert torch.equal(env._observe(zoomed)["image"], env._observe(_with_infection_flipped(zoomed))["image"])
    # a clear scan draws each lesion's own sprites in its lung (the finding in the painful side's, columns
    # 1-2 left or 5-6 right); a hazy one the same haze whatever the findings
    cells = env.sprite_grid(state).view(256, 8, 8)  # nothing ordered yet: the first scan
    is_lesion = (cells >= env._lesion_base) & (cells < env._zoom_base)
    assert bool((is_lesion.sum(dim=(1, 2)) == 8).all())
    shape_of = (cells - env._lesion_base) // (4 * 2)  # finding index of a lesion sprite (num_findings = haze)
    haze = env.params.num_findings
    for side, columns in ((0, slice(1, 3)), (1, slice(5, 7))):
        in_lung = torch.where(is_lesion[:, :, columns], shape_of[:, :, columns], -1).amax(dim=(1, 2))
        truth = torch.where(state.side == side, state.finding, state.other_finding)
        assert torch.equal(in_lung, torch.where(state.clear, truth, haze))
    assert len(torch.unique(state.side)) == 2


def _lung_shapes(env: Diagnose, state) -> torch.Tensor:
    """int64[B, 2]: the lesion shape the scan shows in the left and the right lung (num_findings = haze)."""
    cells = env.sprite_grid(dataclasses.replace(state, revealed=torch.zeros_like(state.revealed))).view(-1, 8, 8)
    is_lesion = (cells >= env._lesion_base) & (cells < env._zoom_base)
    shape_of = (cells - env._lesion_base) // (4 * 2)
    return torch.stack(
        [torch.where(is_lesion[:, :, c], shape_of[:, :, c], -1).amax(dim=(1, 2)) for c in (slice(1, 3), slice(5, 7))], dim=1
    )


def test_image_alone_cannot_tell_which_lesion_matters() -> None:
    """Given the two lesions a scan shows, the painful side is a coin flip: for two different shapes the
    finding is either one equally often, so an image-only reader is right about 1 time in 4."""
    env = Diagnose(num_envs=20000, clear_scan_prob=1.0)
    env.reset(seed=9)
    state = env.state
    shapes = _lung_shapes(env, state)
    assert torch.equal(shapes.gather(1, state.side[:, None]).squeeze(1), state.finding)
    differ = shapes[:, 0] != shapes[:, 1]
    left_is_finding = (state.side == 0)[differ].float().mean()
    assert abs(float(left_is_finding) - 0.5) < 0.02
    # the best guess from the image alone (either shape, either infection) is right ~1/4 of the time
    guess = 2 * shapes[:, 0]  # the left lesion's shape, with infection
    truth = 2 * state.finding + (~state.infection).long()
    assert abs(float((guess == truth)[differ].float().mean()) - 0.25) < 0.02
    # the text names the side
    side_words = [env.decode(t).split(" side")[0].split()[-1] for t in env._observe(state)["text"][:200]]
    assert side_words == [("left", "right")[int(x)] for x in state.side[:200]]


def test_text_tells_the_infection_and_never_the_finding() -> None:
    env = Diagnose(num_envs=256)
    env.reset(seed=1)
    state = env.state
    other_finding = dataclasses.replace(state, finding=(state.finding + 1) % env.params.num_findings)
    assert torch.equal(_full_record(env, state), _full_record(env, other_finding))
    flipped = _full_record(env, _with_infection_flipped(state))
    assert bool((flipped != _full_record(env, state)).any(dim=1).all())


def test_posterior_needs_both_modalities() -> None:
    """With a clear scan the image narrows the condition to one pair; the text's evidence picks within it."""
    env = Diagnose(num_envs=512, clear_scan_prob=1.0, fever_reliability=1.0)
    _, info = env.reset(seed=3)
    post = info["posterior"]
    torch.testing.assert_close(post.max(dim=1).values, torch.ones(512))
    assert bool((post.argmax(dim=1) == info["condition"]).all())
    # without the fever history (reliability 0.5) the clear scan leaves two candidates at 0.5 each
    env = Diagnose(num_envs=512, clear_scan_prob=1.0, fever_reliability=0.5)
    _, info = env.reset(seed=3)
    torch.testing.assert_close(info["posterior"].max(dim=1).values, torch.full((512,), 0.5))
    # with a hazy scan and certain text, three candidates remain
    env = Diagnose(num_envs=512, clear_scan_prob=0.0, fever_reliability=1.0)
    _, info = env.reset(seed=3)
    torch.testing.assert_close(info["posterior"].max(dim=1).values, torch.full((512,), 1 / 3))


def _slow_posterior(params, finding, infection, clear, fever, blood, temperature, revealed):
    """Bayes by enumeration over conditions, one instance, plain Python."""
    scores = []
    for condition in range(2 * params.num_findings):
        f, infected = condition // 2, condition % 2 == 0
        like = 1.0
        if clear or revealed[Exam.SCAN]:
            like *= float(f == finding)
        for shown, said, accuracy in ((True, fever, params.fever_reliability), (revealed[Exam.BLOOD], blood, params.blood_accuracy),
                                      (revealed[Exam.TEMPERATURE], temperature, params.temperature_accuracy)):
            if shown:
                like *= accuracy if said == infected else 1 - accuracy
        scores.append(like)
    total = sum(scores)
    return [s / total for s in scores]


def test_posterior_matches_a_slow_reference_on_random_states() -> None:
    env = Diagnose(num_envs=256, num_findings=4, fever_reliability=0.7, blood_accuracy=0.9, temperature_accuracy=0.6)
    env.reset(seed=0)
    g = torch.Generator().manual_seed(1)
    state = dataclasses.replace(
        env.state,
        clear=torch.rand(256, generator=g) < 0.5,
        fever=torch.rand(256, generator=g) < 0.5,
        blood_high=torch.rand(256, generator=g) < 0.5,
        temperature_high=torch.rand(256, generator=g) < 0.5,
        revealed=torch.rand(256, NUM_TESTS, generator=g) < 0.5,
    )
    post = env.posterior(state)
    for i in range(256):
        expected = _slow_posterior(
            env.params, int(state.finding[i]), bool(state.infection[i]), bool(state.clear[i]), bool(state.fever[i]),
            bool(state.blood_high[i]), bool(state.temperature_high[i]), state.revealed[i].tolist(),
        )
        np.testing.assert_allclose(post[i].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_evidence_agrees_with_the_infection_at_the_configured_rates() -> None:
    env = Diagnose(num_envs=8192, fever_reliability=0.8, blood_accuracy=0.95, temperature_accuracy=0.75)
    env.reset(seed=0)
    s = env.state
    for result, rate in ((s.fever, 0.8), (s.blood_high, 0.95), (s.temperature_high, 0.75)):
        assert abs((result == s.infection).float().mean().item() - rate) < 0.02
    assert abs(s.clear.float().mean().item() - 0.5) < 0.02
    counts = torch.bincount(2 * s.finding + (~s.infection).long(), minlength=6)
    assert int(counts.min()) > 8192 / 6 * 0.9


# ---------------------------------------------------------------------------- tests, diagnoses, the shift
def test_ordering_a_test_costs_and_reveals_its_result() -> None:
    env = Diagnose(num_envs=64, test_cost=0.07)
    obs, _ = env.reset(seed=4)
    s = env.state
    before = [env.decode(t) for t in obs["text"]]
    obs, reward, terminated, _, info = _step(env, Exam.BLOOD)
    torch.testing.assert_close(reward, torch.full((64,), -0.07))
    assert not bool(terminated.any()) and bool(info["revealed"][:, Exam.BLOOD].all())
    high = {" ".join(t.split()) for t in SENTENCES[Sentence.BLOOD_HIGH]}
    normal = {" ".join(t.split()) for t in SENTENCES[Sentence.BLOOD_NORMAL]}
    for row in range(64):
        text = env.decode(obs["text"][row])
        assert text.startswith(before[row])
        added = text[len(before[row]) :].strip()
        assert added in (high if bool(s.blood_high[row]) else normal), added
    # ordering it again costs again and changes nothing
    again, reward, *_ = _step(env, Exam.BLOOD)
    assert torch.equal(again["text"], obs["text"]) and bool((reward == -0.07).all())


def test_detailed_scan_switches_the_image_to_the_zoom() -> None:
    env = Diagnose(num_envs=32, clear_scan_prob=0.0)
    obs, info = env.reset(seed=5)
    before = info["posterior"].max(dim=1).values
    zoom, _, _, _, info = _step(env, Exam.SCAN)
    assert not torch.equal(zoom["image"], obs["image"])
    assert bool((info["posterior"].max(dim=1).values > before + 0.2).all())  # the finding is now known
    zoom2, *_ = _step(env, Exam.TEMPERATURE)
    assert torch.equal(zoom2["image"], zoom["image"])  # the view stays
    # the zoom shows each lesion's own sprites, left lung's in columns 0-3 and right lung's in 4-7
    s = env.state
    for side, corner in ((0, 2 * 8), (1, 2 * 8 + 4)):
        shape = torch.where(s.side == side, s.finding, s.other_finding)
        first = env.sprite_grid(s)[:, corner] - (env._zoom_base + shape * 16 * 2)
        assert bool(((first >= 0) & (first < 2)).all())


def test_diagnoses_score_and_the_shift_moves_on() -> None:
    env = Diagnose(num_envs=128, patients=2)
    _, info = env.reset(seed=6)
    first = info["condition"].clone()
    # diagnose the first patient right in even rows, wrong in odd rows
    wrong = (first + 1) % env.params.num_conditions
    actions = torch.where(torch.arange(128) % 2 == 0, first, wrong) + NUM_TESTS
    _, reward, terminated, truncated, info = env.step(actions)
    assert not bool((terminated | truncated).any())
    expected = torch.where(torch.arange(128) % 2 == 0, 1.0, -1.0)
    torch.testing.assert_close(reward, expected)
    assert bool((info["patient"] == 1).all()) and not bool(info["revealed"].any())
    assert torch.equal(info["end_reason"], torch.where(torch.arange(128) % 2 == 0, 1, 2))
    # the second patient is a fresh draw: conditions change in some rows
    assert bool((info["condition"] != first).any())
    _, reward, terminated, _, info = env.step(info["condition"] + NUM_TESTS)
    assert bool(terminated.all()) and bool((reward == 1.0).all())
    assert torch.equal(info["episode_return"], torch.where(torch.arange(128) % 2 == 0, 2.0, 0.0))


def test_one_patient_shift_ends_at_the_diagnosis() -> None:
    env = gym.make("mmrl/Diagnose-v0", patients=1)
    _, info = env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(int(info["condition"]) + NUM_TESTS)
    assert terminated and not truncated and reward == 1.0


def test_step_limit_truncates_without_reward() -> None:
    env = Diagnose(num_envs=4, max_steps=3)
    env.reset(seed=0)
    for _ in range(3):
        _, reward, terminated, truncated, info = _step(env, Exam.TEMPERATURE)
    assert bool(truncated.all()) and not bool(terminated.any()) and bool((info["end_reason"] == 3).all())


# ---------------------------------------------------------------------------- text
def test_text_is_the_history_in_many_phrasings() -> None:
    env = Diagnose(num_envs=512)
    obs, _ = env.reset(seed=7)
    s = env.state
    fever = {" ".join(t.split()) for t in SENTENCES[Sentence.FEVER]}
    no_fever = {" ".join(t.split()) for t in SENTENCES[Sentence.NO_FEVER]}
    openings = set()
    for row in range(512):
        text = env.decode(obs["text"][row])
        said = fever if bool(s.fever[row]) else no_fever
        assert any(text.endswith(p) for p in said), text
        openings.add(text.split()[0] if text.split()[0] in ("a", "patient") else "age")
    assert openings == {"a", "patient", "age"}
    assert all(len(SENTENCES[k]) == PHRASINGS >= 3 for k in Sentence)
    assert len({env.decode(t) for t in obs["text"]}) > 200
    # with all three tests ordered the record still fits: six sentences, none cut off
    for test in Exam:
        obs, *_ = _step(env, int(test))
    for ids in obs["text"]:
        text = env.decode(ids)
        assert text.endswith(" .") and text.count(" . ") == 5, text


# ---------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(num_findings=5), r"num_findings must be in \[2, 4\]; got 5"),
        (dict(patients=0), r"patients must be >= 1; got 0"),
        (dict(blood_accuracy=1.5), r"blood_accuracy must be a probability in \[0, 1\]; got 1.5"),
        (dict(test_cost=-0.1), r"test_cost must be in \[0, 1\]; got -0.1"),
        (dict(image_size=16), r"image_size must be >= 32 and <= 512; got 16"),
        (dict(image_size=4096), r"image_size must be >= 32 and <= 512; got 4096"),
        (dict(max_text_length=10), r"max_text_length=10 is too short"),
    ],
)
def test_bad_options_raise_clear_errors(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Diagnose(**bad)


def test_unknown_option_names_the_valid_ones() -> None:
    with pytest.raises(TypeError, match=r"Diagnose has no option 'findings'; valid options: \[.*'num_findings'"):
        Diagnose(findings=3)


def test_four_findings_make_eight_conditions() -> None:
    env = gym.make("mmrl/Diagnose-v0", num_findings=4, image_size=96)
    obs, info = env.reset(seed=0)
    assert env.action_space.n == NUM_TESTS + 8 and info["posterior"].shape == (8,)
    assert obs["image"].shape == (3, 96, 96)
    assert env.unwrapped.batched_env.conditions == CONDITIONS


# ---------------------------------------------------------------------------- reference policies
def _returns(policy: str, episodes: int = 600, **params: object):
    env = Diagnose(num_envs=episodes, **params)
    pol = make_reference_policy(policy, env, seed=0)
    return run_episodes(env, pol.act, seed=100, update=pol.update, sum_keys=("correct", "diagnosed"))


def test_oracle_beats_scripted_beats_random() -> None:
    random, scripted, oracle = (_returns(p) for p in ("random", "greedy", "oracle"))
    assert oracle.mean_return == pytest.approx(3.0)  # three right diagnoses, no test
    assert scripted.mean_return > random.mean_return + 3.0, (scripted.mean_return, random.mean_return)
    assert oracle.mean_return > scripted.mean_return + 0.2
    accuracy = scripted.sums["correct"].sum() / scripted.sums["diagnosed"].sum()
    assert accuracy > 0.9


def test_scripted_policy_orders_the_scan_only_when_the_first_one_is_hazy() -> None:
    env = Diagnose(num_envs=256)
    obs, info = env.reset(seed=8)
    policy = make_reference_policy("greedy", env)
    actions = policy.act(obs, info)
    clear = env.state.clear
    assert bool((actions[~clear] == Exam.SCAN).all()) and bool((actions[clear] != Exam.SCAN).all())


@pytest.mark.parametrize("options", [{}, {"image_size": 36}, {"image_size": 128, "num_findings": 4}, {"image_size": 72}])
def test_pasted_scans_match_a_render_of_every_cell(options: dict) -> None:
    """The observation (a pre-rendered background with the lesions pasted on) is the full 8x8 grid of
    the state's sprite ids: first scan, or the zoom once the detailed scan was ordered."""
    env = Diagnose(num_envs=128, **options)
    obs, _ = env.reset(seed=0)
    generator = torch.Generator().manual_seed(1)
    zoomed_seen = 0
    for _ in range(30):
        obs, *_ = env.step(torch.randint(env.single_action_space.n, (128,), generator=generator))
        s = env.state
        zoomed_seen += int(s.revealed[:, Exam.SCAN].sum())
        assert torch.equal(env.renderer.render(env.sprite_grid(s)), obs["image"])
    assert zoomed_seen > 0


def test_every_image_size_pastes_the_scan_a_full_render_shows() -> None:
    """The block paste moves the widest units each size allows (16 bytes at 64 and 128 px, bytes at 65 px):
    at every size from 32 to 140 px (and a few larger), and at odd batch sizes, each row's image is the
    render of its own sprite grid, byte for byte."""
    for size in [*range(32, 141), 194, 200, 256]:
        env = Diagnose(num_envs=15 if size % 2 else 31, image_size=size)
        obs, _ = env.reset(seed=size)
        generator = torch.Generator().manual_seed(size)
        for _ in range(3):
            reference = env.renderer.render(env.sprite_grid(env.state))
            assert torch.equal(reference, obs["image"]), f"image_size={size}"
            obs, *_ = env.step(torch.randint(env.single_action_space.n, (env.num_envs,), generator=generator))
