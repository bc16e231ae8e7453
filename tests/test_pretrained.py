"""Tests of the Hugging Face encoders' guards and of the pretrained image encoder (issue #15).

Every model is tiny, random and written to a temp folder by the test (no download): a word-level BERT tokenizer
that covers only part of the env's words, a BERT without tokenizer files, and ViT, CLIP-vision and ResNet models with
their image processors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs

import mmrl
from mmrl.extractors import ImageFeatureCache, PretrainedImageEncoder, save_tiny_bert
from mmrl.extractors.pretrained import BERT_SPECIAL_TOKENS

ENV_ID = "mmrl/Recommend-v0"
TINY = dict(features_dim=24, text_dim=16, fusion_dim=16, film_blocks=1, attention_heads=2, image_channels=(8,))


def observation_space(image_size: int) -> spaces.Dict:
    env = gym.make(ENV_ID, image_size=image_size)
    space = env.observation_space
    env.close()
    return space


def batch(image_size: int, num_envs: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """Recommend observations after one step, preprocessed as SB3 does (images / 255, ids as floats)."""
    venv = mmrl.make_vec(ENV_ID, num_envs=num_envs, seed=seed, image_size=image_size)
    venv.reset()
    obs, *_ = venv.step(np.arange(num_envs) % venv.action_space.n)
    space = venv.observation_space
    venv.close()
    return preprocess_obs({key: torch.as_tensor(value) for key, value in obs.items()}, space)


@pytest.fixture(scope="module")
def space32() -> spaces.Dict:
    return observation_space(32)


# ------------------------------------------------------------------ text: tokenizer guards


def test_tokenizer_that_misses_the_env_words_fails_clearly(space32: spaces.Dict, tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel, BertTokenizer

    vocabulary = space32["text"].vocabulary
    known = list(vocabulary.words[2:12])  # 10 of the 84 words
    (tmp_path / "vocab.txt").write_text("\n".join([*BERT_SPECIAL_TOKENS, *known]) + "\n")
    tokenizer = BertTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)  # fmt: skip
    BertModel(config).save_pretrained(str(tmp_path))
    tokenizer.save_pretrained(str(tmp_path))
    share = 1 - len(known) / (len(vocabulary) - 2)
    missing = [w for w in vocabulary.words[2:] if w not in known]
    with pytest.raises(ValueError) as error:
        mmrl.MultimodalExtractor(space32, text_encoder="pretrained", pretrained_path=tmp_path, **TINY)
    message = str(error.value)
    assert str(tmp_path.resolve()) in message
    assert f"{share:.0%} of the env's vocabulary" in message and "max_unknown_share=20%" in message
    assert missing[0] in message and "[UNK]" in message
    # A looser bound accepts the model and records the share.
    extractor = mmrl.MultimodalExtractor(
        space32, text_encoder="pretrained", pretrained_path=tmp_path, max_unknown_share=0.95, **TINY
    )
    assert extractor.text_encoder.unknown_share == pytest.approx(share)
    with pytest.raises(ValueError, match=r"max_unknown_share must be in \[0, 1\]"):
        mmrl.MultimodalExtractor(space32, text_encoder="pretrained", pretrained_path=tmp_path, max_unknown_share=2, **TINY)


def test_model_folder_without_tokenizer_fails_clearly(space32: spaces.Dict, tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(config).save_pretrained(str(tmp_path))  # config + weights, no vocab.txt / tokenizer.json
    with pytest.raises(ValueError, match=r"has no tokenizer .*tokenizer\.save_pretrained\(folder\)") as error:
        mmrl.MultimodalExtractor(space32, text_encoder="pretrained", pretrained_path=tmp_path, **TINY)
    assert str(tmp_path.resolve()) in str(error.value) and "config.json" in str(error.value)


def test_tokenizer_covering_the_vocabulary_passes(space32: spaces.Dict, tmp_path: Path) -> None:
    folder = save_tiny_bert(tmp_path, space32["text"].vocabulary)
    extractor = mmrl.MultimodalExtractor(space32, text_encoder="pretrained", pretrained_path=folder, **TINY)
    assert extractor.text_encoder.unknown_share == 0.0


# ------------------------------------------------------------------ image: tiny vision models


def save_vision_model(folder: Path, kind: str) -> Path:
    """A tiny random ``kind`` (vit | clip | resnet) with its image processor (32 px input), saved to ``folder``."""
    import transformers as tf

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "vit":
        config = tf.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                              image_size=32, patch_size=8)  # fmt: skip
        model, processor = tf.ViTModel(config), tf.ViTImageProcessor(size={"height": 32, "width": 32})
    elif kind == "clip":
        config = tf.CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                                     image_size=32, patch_size=8)  # fmt: skip
        model = tf.CLIPVisionModel(config)
        processor = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    else:
        config = tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
        model, processor = tf.ResNetModel(config), tf.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def vision_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vision")
    return {kind: save_vision_model(root / kind, kind) for kind in ("vit", "clip", "resnet")}


@pytest.mark.parametrize("kind", ["vit", "clip", "resnet"])
@pytest.mark.parametrize("fusion", ["film", "cross_attention"])
def test_pretrained_image_encoder_is_frozen_cached_and_trains_its_projection(
    vision_models: dict[str, Path], kind: str, fusion: str
) -> None:
    space = observation_space(48)  # the 32 px models see the 48 px images resized
    extractor = mmrl.MultimodalExtractor(
        space, image_encoder="pretrained", pretrained_image_path=vision_models[kind], text_encoder="bag", fusion=fusion,
        **TINY,
    )  # fmt: skip
    encoder = extractor.image_encoder
    assert isinstance(encoder, PretrainedImageEncoder)
    assert encoder.trunk.input.size == (32, 32)
    assert encoder.feature_shape[0] == 8 and encoder.feature_shape[1] <= 4  # projected, pooled to at most 4x4
    # The frozen model is neither trained nor saved; only the 1x1 projection on top is.
    image_keys = {key for key in extractor.state_dict() if key.startswith("encoders.image.")}
    assert image_keys == {"encoders.image.trunk.projection.0.weight", "encoders.image.trunk.projection.0.bias"}
    assert not any(p.requires_grad for p in encoder.hf_model.parameters())
    assert encoder.cache_hits == encoder.cache_misses == 0

    observations = batch(48, num_envs=6)
    features = extractor(observations)
    features.sum().backward()
    assert features.shape == (6, TINY["features_dim"])
    assert encoder.trunk.projection[0].weight.grad is not None
    assert (encoder.cache_misses, encoder.cache_hits) == (6, 0)
    with torch.no_grad():
        again = extractor(observations)  # PPO's epochs: the same observations again
    assert (encoder.cache_misses, encoder.cache_hits) == (6, 6)
    torch.testing.assert_close(again, features.detach())
    # The cached maps equal the model's own output.
    images = observations["image"]
    torch.testing.assert_close(encoder.trunk.features(images), encoder.trunk.encode(images), rtol=1e-5, atol=1e-6)


def test_image_keys_and_cache_eviction(vision_models: dict[str, Path]) -> None:
    space = observation_space(32)
    encoder = PretrainedImageEncoder(space["image"].shape, vision_models["vit"], channels=4, cache_size=4)
    images = batch(32, num_envs=6)["image"]
    keys = encoder.trunk.image_keys(images)
    assert len(set(keys)) == 6  # distinct slates, distinct keys
    assert encoder.trunk.image_keys(images[3:5]) == keys[3:5]  # a key does not depend on the batch
    doubled = torch.cat([images[:2], images[:2]])
    with torch.no_grad():
        encoder(doubled)
    assert (encoder.cache_misses, encoder.cache_hits) == (2, 2)  # a repeat inside a batch is encoded once
    with torch.no_grad():
        out = encoder(images)  # 4 new images into a cache of 4: the two oldest go
    cache = encoder.cache
    assert len(cache) == 4 and cache.lookup(keys[:2]) == [-1, -1] and min(cache.lookup(keys[2:])) >= 0
    uncached = PretrainedImageEncoder(space["image"].shape, vision_models["vit"], channels=4, cache_size=0)
    uncached.trunk.projection.load_state_dict(encoder.trunk.projection.state_dict())
    assert uncached.cache is None
    with torch.no_grad():
        torch.testing.assert_close(uncached(images), out, rtol=1e-5, atol=1e-6)
    # A cache can be shared (a DQN's online and target networks).
    shared = ImageFeatureCache(16, "vit")
    first = PretrainedImageEncoder(space["image"].shape, vision_models["vit"], cache=shared)
    second = PretrainedImageEncoder(space["image"].shape, vision_models["vit"], cache=shared)
    with torch.no_grad():
        first(images)
        second(images)
    assert first.cache is second.cache is shared and (shared.misses, shared.hits) == (6, 6)


def test_fine_tuned_image_model_gets_gradients(vision_models: dict[str, Path]) -> None:
    space = observation_space(32)
    extractor = mmrl.MultimodalExtractor(
        space, image_encoder="pretrained", pretrained_image_path=vision_models["resnet"], freeze_pretrained_image=False,
        text_encoder="bag", fusion="concat", **TINY,
    )  # fmt: skip
    encoder = extractor.image_encoder
    assert encoder.cache is None
    assert any(key.startswith("encoders.image.trunk.model.") for key in extractor.state_dict())
    extractor(batch(32, num_envs=4)).sum().backward()
    assert any(p.grad is not None and torch.any(p.grad != 0) for p in encoder.hf_model.parameters())


def test_pretrained_image_encoder_in_ppo(vision_models: dict[str, Path], tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    venv = mmrl.make_vec(ENV_ID, num_envs=4, seed=0, image_size=32)
    kwargs = dict(image_encoder="pretrained", pretrained_image_path=str(vision_models["vit"]), text_encoder="bag",
                  fusion="film", features_dim=32, image_channels=(8,), film_blocks=1)  # fmt: skip
    model = PPO("MultiInputPolicy", venv, n_steps=64, batch_size=64, n_epochs=2, seed=0, device="cpu",
                policy_kwargs=dict(features_extractor_class=mmrl.MultimodalExtractor, features_extractor_kwargs=kwargs))  # fmt: skip
    model.learn(total_timesteps=512)
    assert model.num_timesteps >= 512
    encoder = model.policy.features_extractor.image_encoder
    # The model runs once per observation; the 2 epochs read the cache.
    assert encoder.cache_hits >= 2 * 512 and encoder.cache_misses <= 512 + 2 * 4
    obs = venv.reset()
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "agent")
    loaded = PPO.load(tmp_path / "agent", device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)


def test_pretrained_image_from_the_training_config(vision_models: dict[str, Path]) -> None:
    from mmrl.train import compose_config, extractor_kwargs

    config = compose_config(
        ["extractor.image_encoder=pretrained", f"extractor.pretrained_image_path={vision_models['vit']}",
         "extractor.image_channels=[8]", "extractor.image_cache_size=128"]
    )  # fmt: skip
    extractor = mmrl.MultimodalExtractor(observation_space(32), **extractor_kwargs(config))
    assert isinstance(extractor.image_encoder, PretrainedImageEncoder)
    assert extractor.image_encoder.cache.capacity == 128


def test_pretrained_image_bad_paths_fail_clearly(vision_models: dict[str, Path], tmp_path: Path) -> None:
    space = observation_space(32)
    build = lambda path, **kw: mmrl.MultimodalExtractor(space, image_encoder="pretrained", pretrained_image_path=path, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="needs pretrained_image_path=<a local folder"):
        build(None)
    with pytest.raises(ValueError, match="pretrained_image_path '.*missing' is not a folder"):
        build(tmp_path / "missing")
    no_processor = tmp_path / "no_processor"
    shutil.copytree(vision_models["vit"], no_processor)
    (no_processor / "preprocessor_config.json").unlink()
    with pytest.raises(ValueError, match=r"has no preprocessor_config\.json: save it with AutoImageProcessor"):
        build(no_processor)
    text_model = save_tiny_bert(tmp_path / "bert", space["text"].vocabulary)
    shutil.copy(vision_models["vit"] / "preprocessor_config.json", text_model)
    with pytest.raises(ValueError, match="is not a vision model: its input is 'input_ids'"):
        build(text_model)
    broken = tmp_path / "broken"
    shutil.copytree(vision_models["vit"], broken)
    (broken / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(ValueError, match="cannot load a Hugging Face vision model from"):
        build(broken)
    with pytest.raises(ValueError, match="takes one image_channels width"):
        build(vision_models["vit"], image_channels=(8, 16))
    gray = spaces.Dict({"image": spaces.Box(0, 255, (1, 32, 32), np.uint8), "text": space["text"]})
    with pytest.raises(ValueError, match="takes 3-channel images; the observation has 1 channels"):
        mmrl.MultimodalExtractor(gray, image_encoder="pretrained", pretrained_image_path=vision_models["vit"])


@pytest.mark.parametrize("kind", ["vit", "clip"])
def test_pixels_match_the_image_processor(vision_models: dict[str, Path], kind: str) -> None:
    """At the model's own size, the torch preprocessing gives the pixel values of the model's image processor."""
    from transformers import AutoImageProcessor

    venv = mmrl.make_vec(ENV_ID, num_envs=2, seed=0, image_size=32)
    images = venv.reset()["image"]  # uint8[2, 3, 32, 32]
    processor = AutoImageProcessor.from_pretrained(str(vision_models[kind]), local_files_only=True)
    expected = processor(images=list(images.transpose(0, 2, 3, 1)), return_tensors="pt")["pixel_values"]
    trunk = PretrainedImageEncoder((3, 32, 32), vision_models[kind]).trunk
    ours = (torch.as_tensor(images).float() / 255 * trunk.input.scale - trunk.mean) / trunk.std
    torch.testing.assert_close(ours, expected.float(), rtol=1e-4, atol=1e-4)
