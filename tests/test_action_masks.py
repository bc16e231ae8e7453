"""Action masks (#15): each env's ``_action_mask`` rules out only actions that change nothing, every face hands the
same mask (``action_masks()``, ``info["action_mask"]``, SB3's ``env_method``), and sb3-contrib's MaskablePPO trains
on ``mmrl.make_vec`` without a wrapper and never picks a masked action."""

from __future__ import annotations

from importlib.resources import files

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

import mmrl

#: small, fast settings of each registered env (the masks do not depend on sizes)
SMALL = {
    "mmrl/Recommend-v0": dict(image_size=32),
    "mmrl/Navigate-v0": dict(room_size=4, num_distractors=1, image_size=36, max_steps=16),
    "mmrl/Diagnose-v0": dict(image_size=32, max_steps=12),
    "mmrl/Tutor-v0": dict(image_size=36, max_steps=12),
}
#: envs whose masks rule something out (Recommend's slots always hold an item: its mask is all true)
MASKING = ("mmrl/Navigate-v0", "mmrl/Diagnose-v0")


def test_small_settings_cover_every_env() -> None:
    assert set(SMALL) == {env_id for env_id in mmrl.ENV_CLASSES if env_id.startswith("mmrl/")}  # not tests' toy envs


def masked_first_actions(masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """int64[B]: a masked action where a row has one (to check it is a no-op), else a random allowed one."""
    scores = torch.rand(masks.shape, generator=generator)
    masked = torch.where(~masks, scores + 1.0, scores * masks)  # masked actions outrank allowed ones
    return masked.argmax(dim=1)


@pytest.mark.parametrize("env_id", sorted(SMALL))
def test_masks_are_well_formed_and_masked_actions_change_nothing(env_id: str) -> None:
    """A masked action leaves what the agent sees unchanged and ends nothing (so masking it loses no return); every
    row always keeps an allowed action."""
    env = mmrl.make_batched(env_id, num_envs=64, **SMALL[env_id])
    obs, _ = env.reset(seed=0)
    generator = torch.Generator().manual_seed(0)
    n = env.single_action_space.n
    masked_steps = 0
    for _ in range(40):
        masks = env.action_masks()
        assert masks.dtype == torch.bool and masks.shape == (64, n)
        assert bool(masks.any(dim=1).all()), "a row with no allowed action"
        actions = masked_first_actions(masks, generator)
        took_masked = ~masks.gather(1, actions[:, None])[:, 0]
        next_obs, reward, terminated, truncated, _ = env.step(actions)
        rows = took_masked & ~(terminated | truncated)  # finished rows restart: their observation changes anyway
        assert not bool(terminated[took_masked].any()), "a masked action ended an episode"
        assert bool((reward[took_masked] <= 0).all()), "a masked action earned a reward"
        for key in obs:
            assert torch.equal(next_obs[key][rows], obs[key][rows]), f"a masked action changed {key!r}"
        masked_steps += int(rows.sum())
        obs = next_obs
    if env_id in MASKING:
        assert masked_steps > 100, f"too few masked actions exercised ({masked_steps})"
    else:
        assert masked_steps == 0, "Recommend documents an all-true mask"


def test_diagnose_masks_the_tests_already_ordered() -> None:
    env = mmrl.make_batched("mmrl/Diagnose-v0", num_envs=4, **SMALL["mmrl/Diagnose-v0"])
    env.reset(seed=0)
    assert bool(env.action_masks().all())
    env.step(torch.tensor([0, 1, 2, 0]))  # order a test
    masks = env.action_masks()
    assert masks[:, :3].tolist() == [[False, True, True], [True, False, True], [True, True, False], [False, True, True]]
    assert bool(masks[:, 3:].all()), "every diagnosis stays allowed"


def test_navigate_masks_follow_what_is_ahead() -> None:
    from mmrl.envs.navigate import Action, ahead

    env = mmrl.make_batched("mmrl/Navigate-v0", num_envs=256, **SMALL["mmrl/Navigate-v0"])
    env.reset(seed=0)
    for _ in range(10):
        env.step(torch.randint(3, (256,), generator=torch.Generator().manual_seed(1)))  # turns and forwards only
    s = env.state
    masks = env.action_masks()
    _, facing, in_room = ahead(s.agent, s.heading, s.objects, s.present, env.params.room_size, env._steps)
    facing_object = facing.any(dim=1)
    assert bool(masks[:, Action.LEFT].all()) and bool(masks[:, Action.RIGHT].all())
    assert torch.equal(masks[:, Action.FORWARD], in_room & ~facing_object)
    assert torch.equal(masks[:, Action.PICKUP], facing_object) and torch.equal(masks[:, Action.DONE], facing_object)
    assert bool(facing_object.any()) and bool((~in_room).any()), "the rollout never faced an object or a wall"


@pytest.mark.parametrize("env_id", sorted(SMALL))
def test_every_face_hands_the_same_mask(env_id: str) -> None:
    pytest.importorskip("sb3_contrib", reason="sb3-contrib's mask helpers check the SB3 face (pip install -e .[contrib])")
    from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported

    options = SMALL[env_id]
    reference = mmrl.make_batched(env_id, num_envs=4, **options)
    reference.reset(seed=0)
    actions = torch.tensor([0, 1, 2, 0])
    reference.step(actions)
    expected = reference.action_masks().numpy()

    single = gym.make(env_id, **options)  # Gymnasium's wrappers do not forward attributes: unwrapped / get_wrapper_attr
    _, info = single.reset(seed=0)
    assert info["action_mask"].dtype == bool and info["action_mask"].shape == (single.action_space.n,)
    _, _, _, _, info = single.step(0)
    assert np.array_equal(info["action_mask"], expected[0])
    assert np.array_equal(single.unwrapped.action_masks(), expected[0])
    assert np.array_equal(get_action_masks(single), expected[0]) and is_masking_supported(single)

    vector = gym.make_vec(env_id, num_envs=4, **options)
    _, infos = vector.reset(seed=0)
    assert infos["action_mask"].shape == expected.shape and infos["_action_mask"].all()
    _, _, _, _, infos = vector.step(actions.numpy())
    assert np.array_equal(infos["action_mask"], expected) and np.array_equal(vector.action_masks(), expected)

    venv = mmrl.make_vec(env_id, num_envs=4, seed=0, info_keys=("action_mask",), **options)  # in infos on request
    venv.reset()
    assert all(info["action_mask"].shape == expected.shape[1:] for info in venv.reset_infos)
    venv.step_async(actions.numpy())
    _, _, _, infos = venv.step_wait()
    assert np.array_equal(np.stack([info["action_mask"] for info in infos]), expected)
    assert np.array_equal(get_action_masks(venv), expected) and is_masking_supported(venv)
    assert np.array_equal(venv.action_masks(), expected)

    plain = mmrl.make_vec(env_id, num_envs=4, seed=0, **options)
    plain.reset()
    plain.step_async(actions.numpy())
    assert all("action_mask" not in info for info in plain.step_wait()[3]), "the SB3 infos carry masks only on request"
    assert np.array_equal(get_action_masks(plain), expected)


def test_sb3_info_keys_still_refuse_an_unknown_entry() -> None:
    venv = mmrl.make_vec("mmrl/Recommend-v0", num_envs=2, seed=0, info_keys=("action_mask", "no_such_entry"), image_size=32)
    venv.reset()
    venv.step_async(np.zeros(2, dtype=np.int64))
    with pytest.raises(KeyError, match="no_such_entry"):
        venv.step_wait()


def test_env_method_and_get_attr_honour_indices() -> None:
    venv = mmrl.make_vec("mmrl/Navigate-v0", num_envs=6, seed=10, **SMALL["mmrl/Navigate-v0"])
    venv.reset()
    venv.step_async(np.array([2, 2, 0, 1, 2, 2]))
    venv.step_wait()
    masks = venv.batched_env.action_masks().numpy()
    picked = venv.env_method("action_masks", indices=[4, 1])
    assert len(picked) == 2 and np.array_equal(picked[0], masks[4]) and np.array_equal(picked[1], masks[1])
    assert np.array_equal(venv.env_method("action_masks", indices=3)[0], masks[3])
    assert [int(s) for s in venv.get_attr("seeds")] == [10, 11, 12, 13, 14, 15]
    assert [int(s) for s in venv.get_attr("seeds", indices=[5, 0])] == [15, 10]
    assert [int(e) for e in venv.get_attr("elapsed", indices=2)] == [1]
    assert venv.get_attr("num_envs", indices=[0, 1]) == [6, 6]  # not per row: the same value for each env
    assert venv.get_attr("render_mode", indices=[2]) == ["rgb_array"]
    assert venv.env_method("decode", [0, 0], indices=[0, 1]) == ["", ""]
    assert venv.has_attr("action_masks") and not venv.has_attr("no_such_attribute")

    tensors = mmrl.make_vec("mmrl/Navigate-v0", num_envs=3, seed=0, as_tensors=True, **SMALL["mmrl/Navigate-v0"])
    tensors.reset()
    row = tensors.env_method("action_masks", indices=[2])[0]
    assert isinstance(row, torch.Tensor) and torch.equal(row, tensors.batched_env.action_masks()[2])


@pytest.mark.parametrize("indices", [[6], [-1], 7, [0, 99], ["a"], [True]])
def test_out_of_range_indices_are_refused_with_the_value(indices: object) -> None:
    venv = mmrl.make_vec("mmrl/Diagnose-v0", num_envs=6, seed=0, **SMALL["mmrl/Diagnose-v0"])
    venv.reset()
    bad = [i for i in (indices if isinstance(indices, list) else [indices]) if i not in (0,)]
    pattern = rf"env indices must be integers in \[0, 6\); got \[{bad[0]!r}\]"
    for call in (lambda: venv.env_method("action_masks", indices=indices), lambda: venv.get_attr("seeds", indices=indices),
                 lambda: venv.set_attr("validate_actions", True, indices=indices)):  # fmt: skip
        with pytest.raises(IndexError, match=pattern):
            call()


def test_action_masks_before_reset_is_a_clear_error() -> None:
    env = mmrl.make_batched("mmrl/Diagnose-v0", num_envs=2, **SMALL["mmrl/Diagnose-v0"])
    with pytest.raises(RuntimeError, match=r"action_masks\(\) called before reset\(\)"):
        env.action_masks()


def default_extractor_kwargs() -> dict:
    """The extractor of the default run (``configs/config.yaml`` -> ``extractor: film``), as the CLI passes it."""
    text = files("mmrl.configs").joinpath("extractor", "film.yaml").read_text(encoding="utf-8")
    return {k: v for k, v in yaml.safe_load(text).items() if k != "defaults"}


@pytest.mark.parametrize("env_id", sorted(SMALL))
def test_maskable_ppo_trains_on_make_vec_and_never_picks_a_masked_action(env_id: str) -> None:
    sb3_contrib = pytest.importorskip("sb3_contrib", reason="MaskablePPO comes from sb3-contrib (pip install -e .[contrib])")
    from sb3_contrib.common.maskable.utils import get_action_masks
    from stable_baselines3.common.callbacks import BaseCallback

    class CheckMasks(BaseCallback):
        """After each rollout step: the actions taken were allowed by the masks the policy was given."""

        def __init__(self) -> None:
            super().__init__()
            self.steps = self.masked = 0

        def _on_step(self) -> bool:
            masks, actions = self.locals["action_masks"], self.locals["actions"]
            assert masks is not None, "MaskablePPO did not find the env's action masks"
            assert masks[np.arange(len(actions)), actions].all(), "a masked action was chosen"
            self.steps += 1
            self.masked += int((~masks).sum())
            return True

    venv = mmrl.make_vec(env_id, num_envs=8, seed=0, **SMALL[env_id])
    policy_kwargs = dict(features_extractor_class=mmrl.MultimodalExtractor, features_extractor_kwargs=default_extractor_kwargs())
    model = sb3_contrib.MaskablePPO("MultiInputPolicy", venv, n_steps=16, batch_size=64, n_epochs=1, seed=0,
                                    policy_kwargs=policy_kwargs, device="cpu")  # fmt: skip
    callback = CheckMasks()
    model.learn(256, callback=callback)
    assert callback.steps == 32
    if env_id in MASKING:
        assert callback.masked > 0, "the rollout never saw a masked action: the check above proved nothing"

    obs = venv.reset()
    for _ in range(10):
        masks = get_action_masks(venv)
        actions, _ = model.predict(obs, action_masks=masks, deterministic=True)
        assert masks[np.arange(len(actions)), actions].all()
        obs, *_ = venv.step(actions)
