"""Navigate: the movement rule (against a slow reference), missions and rewards, the layout, the text,
the rendering, the options, and the reference planners."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from mmrl.agents.reference import make_reference_policy
from mmrl.envs.navigate import (
    HEADING_STEPS,
    INSTRUCTIONS,
    PHRASINGS,
    Action,
    EndReason,
    Mission,
    Navigate,
    Sprite,
    goal_distance,
    move_rule,
)
from mmrl.episodes import run_episodes


def _place(env: Navigate, agent: tuple[int, int], heading: int, objects: list[tuple[int, int]], mission: Mission) -> None:
    """Overwrite row 0's state: the agent, its heading, the objects' cells (slot 0 = target), the mission."""
    state = env.state
    state.agent[0] = torch.tensor(agent)
    state.heading[0] = heading
    state.objects[0, : len(objects)] = torch.tensor(objects)
    state.present[0] = True
    state.mission[0] = int(mission)


def _env(**params: object) -> Navigate:
    env = Navigate(num_envs=1, **params)
    env.reset(seed=0)
    return env


def _act(env: Navigate, action: Action):
    return env.step(torch.tensor([int(action)]))


# ---------------------------------------------------------------------------- movement
def test_forward_into_a_wall_or_an_object_keeps_the_position() -> None:
    env = _env(num_distractors=1)
    _place(env, (1, 1), 3, [(4, 4), (2, 1)], Mission.GOTO)  # facing north: the wall
    _act(env, Action.FORWARD)
    assert env.state.agent[0].tolist() == [1, 1]
    env.state.heading[0] = 1  # facing south: the distractor at (2, 1)
    _act(env, Action.FORWARD)
    assert env.state.agent[0].tolist() == [1, 1]
    env.state.heading[0] = 0  # facing east: free
    _, reward, terminated, _, _ = _act(env, Action.FORWARD)
    assert env.state.agent[0].tolist() == [1, 2] and not bool(terminated[0]) and float(reward[0]) == 0.0


def test_turning_changes_the_heading_and_not_the_position() -> None:
    env = _env()
    _place(env, (3, 3), 0, [(6, 6), (6, 5), (6, 4), (6, 3)], Mission.GOTO)
    seen = []
    for _ in range(4):
        _act(env, Action.RIGHT)
        seen.append(int(env.state.heading[0]))
    assert seen == [1, 2, 3, 0]
    _act(env, Action.LEFT)
    assert int(env.state.heading[0]) == 3 and env.state.agent[0].tolist() == [3, 3]


def _slow_move(agent, heading, action, objects, present, room_size):
    """Reference movement rule, one instance, plain Python."""
    dr, dc = HEADING_STEPS[heading]
    front = (agent[0] + dr, agent[1] + dc)
    facing = [bool(p) and tuple(o) == front for o, p in zip(objects, present)]
    if action == Action.LEFT:
        heading = (heading - 1) % 4
    elif action == Action.RIGHT:
        heading = (heading + 1) % 4
    elif action == Action.FORWARD:
        inside = 1 <= front[0] <= room_size and 1 <= front[1] <= room_size
        if inside and not any(facing):
            agent = front
    return tuple(agent), heading, facing


def test_move_rule_matches_a_slow_reference_on_random_states() -> None:
    generator = torch.Generator().manual_seed(0)
    room, batch, k = 5, 512, 6
    agent = torch.randint(1, room + 1, (batch, 2), generator=generator)
    heading = torch.randint(4, (batch,), generator=generator)
    actions = torch.randint(len(Action), (batch,), generator=generator)
    objects = torch.randint(1, room + 1, (batch, k, 2), generator=generator)  # may overlap: the rule must not care
    present = torch.rand(batch, k, generator=generator) < 0.7
    steps = torch.tensor(HEADING_STEPS)
    new_agent, new_heading, facing = move_rule(agent, heading, actions, objects, present, room, steps)
    for i in range(batch):
        a, h, f = _slow_move(agent[i].tolist(), int(heading[i]), int(actions[i]), objects[i].tolist(), present[i].tolist(), room)
        assert tuple(new_agent[i].tolist()) == a and int(new_heading[i]) == h and facing[i].tolist() == f, i


# ---------------------------------------------------------------------------- missions and rewards
def test_picking_up_the_target_gives_the_time_discounted_reward() -> None:
    env = _env(max_steps=40)
    _place(env, (2, 2), 0, [(2, 3), (5, 5), (5, 4), (5, 3)], Mission.PICKUP)
    for _ in range(3):  # spend three steps turning on the spot
        _act(env, Action.LEFT)
    _act(env, Action.LEFT)
    _, reward, terminated, _, info = _act(env, Action.PICKUP)
    assert bool(terminated[0]) and bool(info["success"][0])
    assert float(reward[0]) == pytest.approx(1 - 0.9 * 5 / 40)
    assert int(info["end_reason"][0]) == EndReason.SUCCESS


def test_done_facing_the_target_succeeds_on_go_to() -> None:
    env = _env(max_steps=64)
    _place(env, (3, 3), 1, [(4, 3), (1, 1), (1, 2), (1, 3)], Mission.GOTO)
    _, reward, terminated, _, info = _act(env, Action.DONE)
    assert bool(terminated[0]) and float(reward[0]) == pytest.approx(1 - 0.9 / 64)


@pytest.mark.parametrize(
    "mission, action, target_in_front, reason",
    [
        (Mission.GOTO, Action.PICKUP, True, EndReason.WRONG_ACTION),
        (Mission.PICKUP, Action.DONE, True, EndReason.WRONG_ACTION),
        (Mission.GOTO, Action.DONE, False, EndReason.WRONG_OBJECT),
        (Mission.PICKUP, Action.PICKUP, False, EndReason.WRONG_OBJECT),
    ],
)
def test_wrong_object_or_wrong_verb_ends_with_zero(mission: Mission, action: Action, target_in_front: bool, reason: EndReason) -> None:
    env = _env()
    objects = [(3, 4), (5, 5), (5, 4), (5, 3)] if target_in_front else [(5, 5), (3, 4), (5, 4), (5, 3)]
    _place(env, (3, 3), 0, objects, mission)
    _, reward, terminated, _, info = _act(env, action)
    assert bool(terminated[0]) and float(reward[0]) == 0.0 and not bool(info["success"][0])
    assert int(info["end_reason"][0]) == reason


def test_pick_up_and_done_facing_nothing_do_nothing() -> None:
    env = _env()
    _place(env, (3, 3), 0, [(6, 6), (6, 5), (6, 4), (6, 3)], Mission.PICKUP)
    before = dataclasses.replace(env.state)
    for action in (Action.PICKUP, Action.DONE):
        _, reward, terminated, truncated, _ = _act(env, action)
        assert not bool(terminated[0] | truncated[0]) and float(reward[0]) == 0.0
    assert torch.equal(env.state.agent, before.agent) and bool(env.state.present.all())


def test_step_limit_truncates() -> None:
    env = _env(max_steps=5)
    for t in range(5):
        _, _, terminated, truncated, info = _act(env, Action.LEFT)
    assert bool(truncated[0]) and not bool(terminated[0]) and int(info["end_reason"][0]) == EndReason.STEP_LIMIT


# ---------------------------------------------------------------------------- layout and text
def test_start_layout_is_valid_and_distractors_share_colour_or_kind() -> None:
    env = Navigate(num_envs=2048, num_distractors=4)
    env.reset(seed=0)
    s = env.state
    room = env.params.room_size
    cells = torch.cat([s.agent[:, None], s.objects], dim=1)
    assert bool(((cells >= 1) & (cells <= room)).all())
    flat = cells[..., 0] * 100 + cells[..., 1]
    assert bool((flat.sort(dim=1).values.diff(dim=1) != 0).all()), "agent and objects must be in distinct cells"
    front = s.agent + torch.tensor(HEADING_STEPS)[s.heading]
    assert not bool((s.objects == front[:, None]).all(dim=2).any()), "no object in front of the agent at the start"
    same_colour = s.colour[:, 1:] == s.colour[:, :1]
    same_kind = s.kind[:, 1:] == s.kind[:, :1]
    sharers = [0, 1, 3]  # distractors 1, 2 and 4 share exactly one of colour and kind with the target
    assert bool((same_colour[:, sharers] ^ same_kind[:, sharers]).all()), "a distractor shares exactly one attribute"
    assert bool(same_colour[:, 0].all()) and bool(same_kind[:, 1].all())
    # distractor 3 completes the colour x kind square: the colour of 2, the kind of 1, nothing of the target's
    assert bool((s.colour[:, 3] == s.colour[:, 2]).all()) and bool((s.kind[:, 3] == s.kind[:, 1]).all())
    assert not bool((same_colour[:, 2] | same_kind[:, 2]).any())
    # the layout is spread: every cell and heading occurs
    assert len(torch.unique(flat[:, 0])) == room * room and len(torch.unique(s.heading)) == 4
    assert len(torch.unique(s.colour[:, 0])) == env.params.num_colours and len(torch.unique(s.kind[:, 0])) == 3


def test_the_image_alone_does_not_single_out_the_target() -> None:
    """With three distractors every object shares an attribute with exactly two others, so no
    image-only rule (such as "the object that shares with all the others") finds the target."""
    env = Navigate(num_envs=1024, num_distractors=3)
    env.reset(seed=3)
    s = env.state
    shares = (s.colour[:, :, None] == s.colour[:, None, :]) | (s.kind[:, :, None] == s.kind[:, None, :])
    partners = shares.sum(dim=2) - 1  # minus itself
    assert bool((partners == 2).all()), partners[(partners != 2).any(dim=1)][:4]
    assert len({(int(c), int(k)) for c, k in zip(s.colour.flatten(), s.kind.flatten())}) > 12


def test_text_names_the_target_and_the_verb_in_many_phrasings() -> None:
    env = Navigate(num_envs=512)
    obs, _ = env.reset(seed=1)
    s = env.state
    texts = set()
    for row in range(512):
        text = env.decode(obs["text"][row])
        words = text.split()
        assert env.colours[int(s.colour[row, 0])] in words and env.kinds[int(s.kind[row, 0])] in words
        verb_words = {"pick", "grab", "fetch"} if int(s.mission[row]) == Mission.PICKUP else {"go", "walk", "find"}
        assert verb_words & set(words), text
        texts.add(" ".join(w for w in words if w not in env.colours and w not in env.kinds))
    assert all(len(INSTRUCTIONS[m]) == PHRASINGS >= 3 for m in Mission)
    assert len(texts) == 2 * PHRASINGS  # every phrasing of both verbs shows up


def test_mission_option_fixes_the_verb() -> None:
    env = Navigate(num_envs=64, mission="pickup")
    env.reset(seed=0)
    assert bool((env.state.mission == Mission.PICKUP).all())


# ---------------------------------------------------------------------------- rendering
def test_image_shows_the_agent_and_every_object_where_they_are() -> None:
    env = Navigate(num_envs=16)
    obs, _ = env.reset(seed=2)
    p, s, atlas = env.params, env.state, env.renderer.atlas
    tile, offset = p.tile, (p.image_size - p.grid_size * p.tile) // 2

    def cell(row: int, r: int, c: int) -> torch.Tensor:
        y, x = offset + r * tile, offset + c * tile
        return obs["image"][row, :, y : y + tile, x : x + tile]

    for row in range(16):
        r, c = s.agent[row].tolist()
        assert torch.equal(cell(row, r, c), atlas[Sprite.AGENT + int(s.heading[row])])
        for k in range(p.num_objects):
            r, c = s.objects[row, k].tolist()
            sprite = Sprite.OBJECT + int(s.kind[row, k]) * p.num_colours + int(s.colour[row, k])
            assert torch.equal(cell(row, r, c), atlas[sprite])
        assert torch.equal(cell(row, 0, 0), atlas[Sprite.WALL])
    # all object sprites differ from each other
    objects = atlas[Sprite.OBJECT :].reshape(atlas.shape[0] - Sprite.OBJECT, -1)
    assert len(torch.unique(objects, dim=0)) == objects.shape[0]


def _egocentric_reference(env: Navigate, row: int) -> np.ndarray:
    """The egocentric view's sprite ids of one instance, built the slow way: the top-down grid padded
    with wall, cropped around the agent, then turned (np.rot90) until the agent's heading points up."""
    p, s = env.params, env.state
    g, r = p.grid_size, p.room_size
    grid = np.full((g, g), int(Sprite.FLOOR))
    grid[0, :] = grid[-1, :] = grid[:, 0] = grid[:, -1] = int(Sprite.WALL)
    for k in range(p.num_objects):
        if bool(s.present[row, k]):
            grid[tuple(s.objects[row, k].tolist())] = Sprite.OBJECT + int(s.kind[row, k]) * p.num_colours + int(s.colour[row, k])
    ar, ac = s.agent[row].tolist()
    grid[ar, ac] = Sprite.AGENT + 3
    padded = np.pad(grid, r, constant_values=int(Sprite.WALL))
    window = padded[ar : ar + 2 * r + 1, ac : ac + 2 * r + 1]
    turns = {3: 0, 0: 1, 1: 2, 2: 3}[int(s.heading[row])]  # counter-clockwise quarter turns bringing ahead to the top
    return np.rot90(window, turns)


def test_egocentric_view_turns_the_room_so_the_agent_faces_up() -> None:
    env = Navigate(num_envs=64, view="egocentric", room_size=4, image_size=36)
    obs, _ = env.reset(seed=4)
    generator = torch.Generator().manual_seed(0)
    headings = set()
    for _ in range(12):
        for row in range(64):
            ids = torch.from_numpy(_egocentric_reference(env, row).copy()).reshape(1, -1)
            assert torch.equal(env.renderer.render(ids)[0], obs["image"][row]), row
            headings.add(int(env.state.heading[row]))
        obs, *_ = env.step(torch.randint(3, (64,), generator=generator))  # turns and moves only
    assert headings == {0, 1, 2, 3}


def test_egocentric_navigate_passes_the_env_checkers() -> None:
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make("mmrl/Navigate-v0", view="egocentric", render_mode="rgb_array")
    assert env.observation_space["image"].shape == (3, 64, 64)
    gym_check_env(env.unwrapped, skip_render_check=False)
    sb3_check_env(gym.make("mmrl/Navigate-v0", view="egocentric", room_size=4, image_size=36).unwrapped, warn=True)


def test_options_change_the_room_and_the_image() -> None:
    env = gym.make("mmrl/Navigate-v0", room_size=8, num_distractors=6, image_size=80)
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (3, 80, 80) and info["object_positions"].shape == (7, 2)
    frame = env.unwrapped.batched_env.render_frame(0)
    assert frame.shape[0] >= 4 * 80


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(room_size=2), r"room_size must be in \[3, 14\]; got 2"),
        (dict(num_distractors=40), r"num_distractors must be in \[0, 33\] for room_size=6; got 40"),
        (dict(num_colours=9), r"num_colours must be in \[2, 8\]; got 9"),
        (dict(mission="fly"), r"mission must be one of \['goto', 'pickup', 'mixed'\]; got 'fly'"),
        (dict(image_size=20), r"image_size must be >= 32 .*got 20"),
        (dict(image_size=1024), r"image_size must be <= 512; got 1024"),
        (dict(view="first_person"), r"view must be one of \['top_down', 'egocentric'\]; got 'first_person'"),
        (dict(view="egocentric", image_size=48), r"image_size must be >= 52 \(4 pixels per cell of the 13x13 egocentric view\); got 48"),
        (dict(max_steps=0), r"max_steps must be >= 1; got 0"),
        (dict(max_text_length=4), r"max_text_length=4 is too short"),
    ],
)
def test_bad_options_raise_clear_errors(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Navigate(**bad)


def test_unknown_or_mistyped_option() -> None:
    with pytest.raises(TypeError, match=r"Navigate has no option 'room'; valid options: \[.*'room_size'"):
        Navigate(room=5)
    with pytest.raises(TypeError, match="option 'room_size' must be an int; got 5.5"):
        Navigate(room_size=5.5)


# ---------------------------------------------------------------------------- reference policies
def _returns(policy: str, episodes: int = 400, **params: object):
    env = Navigate(num_envs=episodes, **params)
    pol = make_reference_policy(policy, env, seed=0)
    return run_episodes(env, pol.act, seed=100, update=pol.update, sum_keys=("success",))


def test_oracle_beats_greedy_beats_random() -> None:
    random, greedy, oracle = (_returns(p) for p in ("random", "greedy", "oracle"))
    assert oracle.sums["success"].mean() > 0.97
    assert oracle.mean_return > random.mean_return + 0.6, (oracle.mean_return, random.mean_return)
    assert greedy.mean_return > random.mean_return + 0.5, (greedy.mean_return, random.mean_return)
    assert oracle.mean_return >= greedy.mean_return - 0.01
    assert oracle.lengths.mean() <= greedy.lengths.mean()


def test_oracle_succeeds_wherever_the_target_can_be_reached() -> None:
    """In crowded rooms objects can wall the target in; the oracle solves every other episode."""
    params = dict(room_size=5, num_distractors=10)
    env = Navigate(num_envs=200, **params)
    _, info = env.reset(seed=100)
    dist = goal_distance(info, env.params.grid_size)
    agent = info["agent_position"]
    reachable = dist[torch.arange(200), agent[:, 0], agent[:, 1]] <= env.params.room_size**2
    oracle = _returns("oracle", episodes=200, **params)
    assert 0.2 < reachable.float().mean() < 1.0  # the case occurs, and not always
    np.testing.assert_array_equal(oracle.sums["success"] == 1, reachable.numpy())
