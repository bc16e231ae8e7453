"""Recommend: the task design, the user model, catalogues, reward modes, and the reference policies."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import pytest
import torch

import mmrl
from mmrl.agents.reference import make_reference_policy
from mmrl.envs.catalog import CatalogError, load_catalog
from mmrl.envs.recommend import FEEDBACK, PHRASINGS, REQUESTS, Intent, Recommend
from mmrl.episodes import run_episodes


def _stats(policy: str, episodes: int = 600, **params: object):
    env = Recommend(num_envs=episodes, **params)
    pol = make_reference_policy(policy, env, seed=0)
    return run_episodes(env, pol.act, seed=100, update=pol.update, sum_keys=("clicked", "regret"))


def test_reference_policies_order_oracle_greedy_random() -> None:
    random, greedy, oracle = (_stats(p) for p in ("random", "greedy", "oracle"))
    # margins of several standard errors (std ~2.5-10 over 600 episodes => se < 0.5)
    assert greedy.mean_return > random.mean_return + 2.0, (greedy.mean_return, random.mean_return)
    assert oracle.mean_return > greedy.mean_return + 4.0, (oracle.mean_return, greedy.mean_return)
    assert oracle.sums["regret"].sum() == pytest.approx(0.0, abs=1e-6)
    assert random.sums["regret"].mean() > 0.5


def test_slate_is_a_balanced_design_of_wish_and_decoy() -> None:
    """Each K=4 slate holds the wished category twice and the wished colour twice (the decoy likewise),
    so the image alone cannot tell the wish."""
    env = Recommend(num_envs=256)
    env.reset(seed=0)
    for _ in range(5):
        state = env.state
        category = env._item_category[state.slate]
        colour = env._item_colour[state.slate]
        assert bool(((category == state.want_category[:, None]).sum(1) == 2).all())
        assert bool(((colour == state.want_colour[:, None]).sum(1) == 2).all())
        perfect = (category == state.want_category[:, None]) & (colour == state.want_colour[:, None])
        assert bool((perfect.sum(1) == 1).all())
        env.step(torch.randint(4, (256,)))
    # the wished item's slot is uniformly spread (shuffled every step)
    positions = perfect.float().argmax(1)
    counts = torch.bincount(positions, minlength=4)
    assert int(counts.min()) > 256 / 4 * 0.5


def test_text_carries_the_wish_and_feedback() -> None:
    env = Recommend(num_envs=64)
    obs, _ = env.reset(seed=3)
    cat = env.catalog
    for row in range(8):
        words = env.decode(obs["text"][row]).split()
        assert cat.categories[int(env.state.want_category[row])] in words
        assert cat.colours[int(env.state.want_colour[row])] in words
    phrasings = set()
    for _ in range(30):
        obs, _, _, _, info = env.step(torch.randint(4, (64,)))
        phrasings.update(env.decode(t)[:12] for t in obs["text"])
    assert len(phrasings) >= 12  # many phrasings show up, not one sentence
    assert all(len(v) == PHRASINGS >= 3 for v in FEEDBACK.values()) and len(REQUESTS) >= 3
    assert set(FEEDBACK) == set(Intent)


def test_feedback_says_too_pricey_for_unaffordable_rejections() -> None:
    env = Recommend(num_envs=512)
    env.reset(seed=0)
    state = env.state
    tier = env._item_tier[state.slate]
    over = tier > state.budget[:, None]
    actions = over.float().argmax(1)  # an unaffordable slot where there is one
    has = over.any(1)
    obs, _, _, _, info = env.step(actions)
    rows = torch.nonzero(has & ~info["clicked"]).flatten()[:20]
    assert len(rows) > 5
    pricey = {" ".join(p.split()) for p in FEEDBACK[Intent.TOO_PRICEY]}
    for row in rows.tolist():
        text = env.decode(obs["text"][row]) if row not in info["done_index"].tolist() else env.decode(info["final_observation"]["text"][int(torch.nonzero(info["done_index"] == row)[0, 0])])
        assert any(text.startswith(p) for p in pricey), text


@pytest.mark.parametrize("mode", ["revenue", "satisfaction"])
def test_reward_modes(mode: str) -> None:
    env = Recommend(num_envs=256, reward=mode)
    env.reset(seed=1)
    for _ in range(10):
        _, reward, terminated, _, info = env.step(torch.randint(4, (256,)))
        if mode == "revenue":
            torch.testing.assert_close(reward, info["revenue"] / 100.0)
            assert bool((reward[~info["purchased"]] == 0).all()) and bool((reward[info["purchased"]] > 0).all())
        else:
            assert bool((reward[info["clicked"]] == 1.0).all())
            assert bool((reward[~info["clicked"] & ~terminated] == -0.5).all())
            assert bool((reward[terminated] == -2.5).all())
    with pytest.raises(ValueError, match="reward must be one of .*'click'.*got 'likes'"):
        Recommend(reward="likes")


def test_patience_ends_the_session() -> None:
    """Recommending the worst slot every step: a shopper who never clicks leaves after exactly their initial
    patience of rejections (3-5), reported as end reason 1 and as termination."""
    env = Recommend(num_envs=128)
    env.reset(seed=0)
    patience = env.state.patience.clone()
    left_at = torch.zeros(128, dtype=torch.int64)
    clicked = torch.zeros(128, dtype=torch.bool)
    for step in range(1, 6):
        worst = env._decision_info(env.state)["affinity"].argmin(1)
        _, _, terminated, truncated, info = env.step(worst)
        assert torch.equal(info["end_reason"] == 1, terminated)
        first = left_at == 0
        clicked |= info["clicked"] & first
        left_at = torch.where(terminated & first, step, left_at)
    never_clicked = ~clicked
    assert int(never_clicked.sum()) > 100
    assert torch.equal(left_at[never_clicked], patience[never_clicked])


def test_slate_size_and_image_size_options() -> None:
    env = gym.make("mmrl/Recommend-v0", slate_size=6, image_size=48)
    obs, info = env.reset(seed=0)
    assert env.action_space.n == 6 and obs["image"].shape == (3, 48, 48)
    assert info["affinity"].shape == (6,)
    for bad, match in [(dict(slate_size=1), "slate_size"), (dict(image_size=8), "image_size"), (dict(drift_colour=2.0), "drift_colour")]:
        with pytest.raises(ValueError, match=match):
            gym.make("mmrl/Recommend-v0", **bad)


# ---------------------------------------------------------------------------- catalogues on disk
def _write_catalog(folder: Path, rows: list[dict], columns: tuple[str, ...] = ("id", "title", "category", "colour", "pattern", "price", "image")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "items.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in columns})
    return folder


def _good_rows(folder: Path) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for i, (category, colour, pattern, price) in enumerate(
        [("sneaker", "black", "plain", 30), ("sneaker", "white", "striped", 120), ("boot", "black", "dotted", 15),
         ("boot", "white", "checked", 400), ("sandal", "brown", "plain", 45), ("sandal", "black", "plain", 60)]
    ):
        name = f"img{i}.png"
        cv2.imwrite(str(folder / name), rng.integers(0, 255, size=(50 + 10 * i, 40, 3), dtype=np.uint8))
        rows.append(dict(id=str(i), title=f"{colour} {category}", category=category, colour=colour, pattern=pattern, price=price, image=name))
    return rows


def test_catalog_from_disk(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    folder.mkdir()
    _write_catalog(folder, _good_rows(folder))
    env = gym.make("mmrl/Recommend-v0", catalog=str(folder))
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    vocab = env.observation_space["text"].vocabulary
    assert "sneaker" in vocab and "brown" in vocab
    for _ in range(40):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        if terminated or truncated:
            obs, _ = env.reset()
    catalog = env.unwrapped.batched_env.catalog
    assert catalog.num_items == 6 and list(catalog.tier) == [1, 2, 0, 3, 1, 2]


@pytest.mark.parametrize(
    "breakage, match",
    [
        ("missing_image", r"row 3 \(id '1'\): image file .*img1.png' does not exist"),
        ("unreadable_image", r"row 2 \(id '0'\): image file .*img0.png' could not be read"),
        ("missing_column", r"missing column\(s\) \['price'\]"),
        ("bad_price", r"row 4 \(id '2'\): price 'cheap' is not a number"),
        ("bad_pattern", r"row 2 \(id '0'\): pattern 'zigzag' is not one of"),
        ("no_csv", r"items.csv: no such file"),
        ("outside_path", r"row 2 \(id '0'\): image path '../outside.png' leads outside the catalogue folder"),
        ("absolute_path", r"row 2 \(id '0'\): image path '/.*outside.png' leads outside the catalogue folder"),
        ("reserved_word", r"row 2 \(id '0'\): category must be one word \(not <pad> or <unk>\); got '<pad>'"),
        ("category_is_a_colour", r"\['black'\] name both a category and a colour"),
        ("latin1", r"items.csv: not UTF-8 text \(byte 0xe9 at offset \d+\); save it as UTF-8"),
        ("ragged_row", r"row 3 \(id '1'\): 6 fields; every row needs the 7 columns"),
        ("huge_image", r"row 2 \(id '0'\): image file .*img0.png' has 20,000,000 pixels; at most 16,777,216"),
    ],
)
def test_catalog_errors_name_file_row_and_value(tmp_path: Path, breakage: str, match: str) -> None:
    folder = tmp_path / "shop"
    folder.mkdir()
    rows = _good_rows(folder)
    columns = ("id", "title", "category", "colour", "pattern", "price", "image")
    if breakage == "missing_image":
        (folder / "img1.png").unlink()
    elif breakage == "unreadable_image":
        (folder / "img0.png").write_bytes(b"not an image at all")
    elif breakage == "missing_column":
        columns = tuple(c for c in columns if c != "price")
    elif breakage == "bad_price":
        rows[2]["price"] = "cheap"
    elif breakage == "bad_pattern":
        rows[0]["pattern"] = "zigzag"
    elif breakage in ("outside_path", "absolute_path"):
        cv2.imwrite(str(tmp_path / "outside.png"), np.zeros((8, 8, 3), dtype=np.uint8))
        rows[0]["image"] = "../outside.png" if breakage == "outside_path" else str(tmp_path / "outside.png")
    elif breakage == "reserved_word":
        rows[0]["category"] = "<pad>"
    elif breakage == "category_is_a_colour":
        rows[0]["category"] = "black"
    elif breakage == "huge_image":
        cv2.imwrite(str(folder / "img0.png"), np.zeros((5000, 4000, 3), dtype=np.uint8))
    if breakage not in ("no_csv", "latin1", "ragged_row"):
        _write_catalog(folder, rows, columns)
    if breakage == "latin1":
        _write_catalog(folder, rows, columns)
        text = (folder / "items.csv").read_text().replace("black sneaker", "café sneaker")
        (folder / "items.csv").write_bytes(text.encode("latin-1"))
    if breakage == "ragged_row":
        _write_catalog(folder, rows, columns)
        lines = (folder / "items.csv").read_text().splitlines()
        lines[2] = lines[2].rsplit(",", 1)[0]  # the second item's row loses its last field
        (folder / "items.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(CatalogError, match=match):
        load_catalog(folder, tile=32)
    with pytest.raises(CatalogError):
        gym.make("mmrl/Recommend-v0", catalog=str(folder))


def test_a_catalogue_saved_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    """Excel writes UTF-8 with a byte-order mark: it is not part of the first column's name."""
    folder = tmp_path / "shop"
    folder.mkdir()
    _write_catalog(folder, _good_rows(folder))
    (folder / "items.csv").write_bytes(b"\xef\xbb\xbf" + (folder / "items.csv").read_bytes())
    assert load_catalog(folder, tile=16).num_items == 6


def test_vector_env_runs_thousands_of_instances() -> None:
    venv = mmrl.make_vec("mmrl/Recommend-v0", num_envs=2048, seed=0)
    obs = venv.reset()
    assert obs["image"].shape == (2048, 3, 64, 64)
    obs, rewards, dones, infos = venv.step(np.zeros(2048, dtype=np.int64))
    assert len(infos) == 2048 and rewards.shape == (2048,)


def test_difficulty_options_shrink_the_catalogue() -> None:
    env = Recommend(num_envs=64, num_categories=3, num_colours=5)
    assert env.catalog.num_items == 3 * 5 * 4 * 4
    assert env.catalog.categories == ("shirt", "shoe", "bag") and len(env.catalog.colours) == 5
    obs, _ = env.reset(seed=0)
    assert int(env._item_category[env.state.slate].max()) < 3
    with pytest.raises(ValueError, match="num_categories and num_colours must be in \\[2, 8\\]; got 9 and 8"):
        Recommend(num_categories=9)
