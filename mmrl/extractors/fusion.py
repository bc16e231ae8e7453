"""Fusion modules: join an image feature map and text features into one vector.

Every fusion takes ``(feature_map, text)`` where ``feature_map`` is float32[B, C, h, w] from an
:class:`~mmrl.extractors.image_encoders.ImageEncoder` and ``text`` a
:class:`~mmrl.extractors.text_encoders.TextFeatures`; either may be ``None`` when that modality is
dropped (``modalities=["image"]``), so an ablation runs the same module. The output size is measured
by a dummy forward at construction (``output_dim``).

- ``concat``: flattened map and sentence vector side by side.
- ``gated``: each modality projected to ``dim``; a softmax gate computed from all of them weighs their sum.
- ``film``: residual conv blocks whose channels the text modulates, ``gamma * h + beta`` (Perez et al. 2018,
  as in BabyAI, Chevalier-Boisvert et al. 2019).
- ``cross_attention``: text tokens (or the sentence vector when the encoder has no tokens) as queries
  attending over the map's cells (patches, with learned position embeddings); the attended vectors are
  averaged over the real tokens and joined to the sentence vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mmrl.extractors.image_encoders import ImageEncoder
from mmrl.extractors.text_encoders import TextFeatures, masked_mean


class Fusion(nn.Module):
    """Base class. ``feature_shape``: ``(C, h, w)`` of the map or ``None``; ``text_dim``: sentence vector size or
    ``None``; ``token_dim``: token vector size or ``None``. Subclasses build their layers and call :meth:`_measure`."""

    output_dim: int

    def __init__(self, feature_shape: Sequence[int] | None, text_dim: int | None, token_dim: int | None = None):
        super().__init__()
        if feature_shape is None and text_dim is None:
            raise ValueError("a fusion needs at least one modality")
        self.feature_shape = None if feature_shape is None else tuple(int(s) for s in feature_shape)
        self.text_dim = text_dim
        self.token_dim = token_dim

    def _measure(self) -> None:
        feature_map = None if self.feature_shape is None else torch.zeros(2, *self.feature_shape)
        text = None
        if self.text_dim is not None:
            tokens = mask = None
            if self.token_dim is not None:
                tokens, mask = torch.zeros(2, 3, self.token_dim), torch.ones(2, 3, dtype=torch.bool)
            text = TextFeatures(torch.zeros(2, self.text_dim), tokens, mask)
        with torch.no_grad():
            self.output_dim = int(self(feature_map, text).shape[-1])

    def forward(self, feature_map: Tensor | None, text: TextFeatures | None) -> Tensor:
        """:param feature_map: float32[B, C, h, w] or ``None``.
        :param text: the text encoder's features or ``None``.
        :return: float32[B, output_dim]."""
        raise NotImplementedError


class ConcatFusion(Fusion):
    """``[flatten(map), sentence vector]``."""

    def __init__(self, feature_shape: Sequence[int] | None, text_dim: int | None, token_dim: int | None = None):
        super().__init__(feature_shape, text_dim, token_dim)
        self._measure()

    def forward(self, feature_map: Tensor | None, text: TextFeatures | None) -> Tensor:
        parts = [] if feature_map is None else [ImageEncoder.pool(feature_map)]
        if text is not None:
            parts.append(text.vector)
        return torch.cat(parts, dim=1)


class GatedFusion(Fusion):
    """``sum_m g_m * relu(W_m x_m)`` with ``g = softmax(W_g [relu(W_m x_m)]_m)`` over the present modalities
    (with one modality, its projection).

    :param dim: projection size (= output size).
    """

    def __init__(
        self, feature_shape: Sequence[int] | None, text_dim: int | None, token_dim: int | None = None, dim: int = 128
    ):
        super().__init__(feature_shape, text_dim, token_dim)
        self.image_projection = None if feature_shape is None else nn.Linear(math.prod(self.feature_shape), dim)
        self.text_projection = None if text_dim is None else nn.Linear(text_dim, dim)
        count = (feature_shape is not None) + (text_dim is not None)
        self.gate = nn.Linear(count * dim, count) if count > 1 else None  # one modality: nothing to weigh
        self._measure()

    def forward(self, feature_map: Tensor | None, text: TextFeatures | None) -> Tensor:
        projected = []
        if self.image_projection is not None and feature_map is not None:
            projected.append(torch.relu(self.image_projection(ImageEncoder.pool(feature_map))))
        if self.text_projection is not None and text is not None:
            projected.append(torch.relu(self.text_projection(text.vector)))
        if self.gate is None:
            return projected[0]
        stacked = torch.stack(projected, dim=1)  # float32[B, M, dim]
        gates = torch.softmax(self.gate(stacked.flatten(1)), dim=1)  # float32[B, M]
        return (gates.unsqueeze(-1) * stacked).sum(1)


class FiLMBlock(nn.Module):
    """``x + relu(film(conv(relu(conv(x)))))``; ``film(h) = (1 + gamma) * h + beta`` per channel (identity without text)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, gamma: Tensor | None = None, beta: Tensor | None = None) -> Tensor:
        h = self.conv1(torch.relu(self.conv0(x)))
        if gamma is not None and beta is not None:
            h = (1.0 + gamma[:, :, None, None]) * h + beta[:, :, None, None]
        return x + torch.relu(h)


class FiLMFusion(Fusion):
    """Text-conditioned residual conv blocks over the map, then the map flattened.

    Text only (no map): the sentence vector.

    :param num_blocks: FiLM blocks.
    """

    def __init__(
        self, feature_shape: Sequence[int] | None, text_dim: int | None, token_dim: int | None = None, num_blocks: int = 2
    ):
        super().__init__(feature_shape, text_dim, token_dim)
        if num_blocks < 1:
            raise ValueError(f"film_blocks must be >= 1; got {num_blocks}")
        self.blocks = nn.ModuleList()
        self.film = None
        if feature_shape is not None:
            channels = self.feature_shape[0]
            self.blocks.extend(FiLMBlock(channels) for _ in range(num_blocks))
            if text_dim is not None:
                self.film = nn.Linear(text_dim, 2 * channels * num_blocks)  # gamma and beta for every block
        self._measure()

    def forward(self, feature_map: Tensor | None, text: TextFeatures | None) -> Tensor:
        if feature_map is None:
            assert text is not None
            return text.vector
        x = feature_map
        if self.film is not None and text is not None:
            params = self.film(text.vector).view(x.shape[0], len(self.blocks), 2, x.shape[1])
            for i, block in enumerate(self.blocks):
                x = block(x, params[:, i, 0], params[:, i, 1])
        else:
            for block in self.blocks:
                x = block(x)
        return ImageEncoder.pool(x)


class CrossAttentionFusion(Fusion):
    """Text queries attending over image patches (the map's ``h * w`` cells).

    Queries are the text tokens when the text encoder has them, else the sentence vector; without text,
    one learned query. The attended vectors (mean over the real tokens) are joined to the sentence vector.
    Text only (no map): the sentence vector.

    :param dim: attention width.
    :param num_heads: attention heads (must divide ``dim``).
    """

    def __init__(
        self,
        feature_shape: Sequence[int] | None,
        text_dim: int | None,
        token_dim: int | None = None,
        dim: int = 128,
        num_heads: int = 4,
    ):
        super().__init__(feature_shape, text_dim, token_dim)
        if dim % num_heads != 0:
            raise ValueError(f"attention_heads={num_heads} must divide fusion_dim={dim}")
        self.patch_projection = self.patch_position = self.query_projection = self.attention = None
        self.learned_query = None
        if feature_shape is not None:
            channels, height, width = self.feature_shape
            self.patch_projection = nn.Linear(channels, dim)
            self.patch_position = nn.Parameter(torch.randn(height * width, dim) * 0.02)
            self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
            if text_dim is None:
                self.learned_query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            else:
                self.query_projection = nn.Linear(token_dim if token_dim is not None else text_dim, dim)
        self._measure()

    def forward(self, feature_map: Tensor | None, text: TextFeatures | None) -> Tensor:
        if feature_map is None:
            assert text is not None
            return text.vector
        assert self.patch_projection is not None and self.attention is not None
        patches = self.patch_projection(feature_map.flatten(2).transpose(1, 2)) + self.patch_position  # [B, hw, dim]
        mask = None
        if text is None:
            queries = self.learned_query.expand(feature_map.shape[0], -1, -1)
        elif text.tokens is not None and self.token_dim is not None:
            queries, mask = self.query_projection(text.tokens), text.mask  # [B, L, dim]
        else:
            queries = self.query_projection(text.vector).unsqueeze(1)  # [B, 1, dim]
        attended, _ = self.attention(queries, patches, patches, need_weights=False)
        pooled = attended.mean(1) if mask is None else masked_mean(attended, mask)
        return pooled if text is None else torch.cat([pooled, text.vector], dim=1)


#: name -> fusion class
FUSIONS: dict[str, type[Fusion]] = {
    "concat": ConcatFusion,
    "gated": GatedFusion,
    "film": FiLMFusion,
    "cross_attention": CrossAttentionFusion,
}
