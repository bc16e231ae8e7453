"""Text encoders trained from scratch: bag of embeddings, GRU, small transformer.

Text observations are token ids ``[B, L]`` with padding 0 (:class:`mmrl.core.spaces.TextSpace`). SB3's
preprocessing hands them over as floats, so every encoder calls ``.long()`` first. An encoder returns
:class:`TextFeatures`: a sentence vector, and per-token vectors with their mask when it has them
(cross-attention uses the tokens as queries). The pretrained Hugging Face encoder lives in
:mod:`mmrl.extractors.pretrained`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from mmrl.core.spaces import TextSpace


class TextFeatures(NamedTuple):
    """What a text encoder returns."""

    vector: Tensor
    """float32[B, D], the sentence vector."""
    tokens: Tensor | None = None
    """float32[B, L, D_t], one vector per token (``None`` when the encoder has none)."""
    mask: Tensor | None = None
    """bool[B, L], True on real (non-padding) tokens."""


def text_vocab_size(space: spaces.Space) -> int:
    """Number of token ids of a text space: ``len(vocabulary)`` for a TextSpace, else ``high + 1`` of an integer Box."""
    if isinstance(space, TextSpace):
        return len(space.vocabulary)
    if not isinstance(space, spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"the 'text' observation must be a 1-D Box of token ids (a TextSpace); got {space}")
    if not np.all(np.isfinite(space.high)) or np.any(space.low < 0):
        raise ValueError(f"the 'text' Box must hold token ids in [0, V - 1] with finite bounds; got {space}")
    return int(np.max(space.high)) + 1


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over real tokens: float32[B, L, D], bool[B, L] -> float32[B, D] (an all-padding row gives 0)."""
    weights = mask.unsqueeze(-1).to(values.dtype)
    return (values * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class TextEncoder(nn.Module):
    """Base class: token ids float32/int64[B, L] -> :class:`TextFeatures`.

    Subclasses set up their layers, then call :meth:`_measure` (a dummy forward) to set
    ``output_dim`` (size of the sentence vector) and ``token_dim`` (size of a token vector, or ``None``).
    """

    output_dim: int
    token_dim: int | None

    def _measure(self, max_length: int) -> None:
        ids = torch.ones(1, max_length, dtype=torch.long)  # the unknown word everywhere: never all padding
        with torch.no_grad():
            features = self(ids)
        self.output_dim = int(features.vector.shape[-1])
        self.token_dim = None if features.tokens is None else int(features.tokens.shape[-1])


class BagOfEmbeddings(TextEncoder):
    """Mean of the word embeddings of the real tokens (order-free).

    :param vocab_size: number of token ids V.
    :param max_length: L.
    :param dim: embedding size.
    """

    def __init__(self, vocab_size: int, max_length: int, dim: int = 64):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self._measure(max_length)

    def forward(self, ids: Tensor) -> TextFeatures:
        ids = ids.long()
        mask = ids != 0
        tokens = self.embedding(ids)
        return TextFeatures(masked_mean(tokens, mask), tokens, mask)


class GRUEncoder(TextEncoder):
    """A GRU over the word embeddings; the sentence vector is its output at the last real token.

    The whole padded row is run (cheaper on a CPU than packing); with right padding the outputs up to
    the last real token do not depend on the padding.

    :param vocab_size: number of token ids V.
    :param max_length: L.
    :param dim: embedding and hidden size.
    :param num_layers: stacked GRU layers.
    """

    def __init__(self, vocab_size: int, max_length: int, dim: int = 64, num_layers: int = 1):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.gru = nn.GRU(dim, dim, num_layers=num_layers, batch_first=True)
        self._measure(max_length)

    def forward(self, ids: Tensor) -> TextFeatures:
        ids = ids.long()
        mask = ids != 0
        tokens, _ = self.gru(self.embedding(ids))  # float32[B, L, D]
        positions = torch.arange(ids.shape[1], device=ids.device)
        last = (mask * positions).argmax(1)  # index of the last real token (0 for an empty row)
        vector = tokens[torch.arange(ids.shape[0], device=ids.device), last]
        return TextFeatures(vector, tokens, mask)


class TransformerTextEncoder(TextEncoder):
    """A small pre-norm ``nn.TransformerEncoder`` with learned positional embeddings and a key padding mask;
    the sentence vector is the mean of the real tokens' outputs. No dropout (RL).

    :param vocab_size: number of token ids V.
    :param max_length: L (number of positional embeddings).
    :param dim: model width.
    :param num_layers: encoder layers.
    :param num_heads: attention heads (must divide ``dim``).
    """

    def __init__(self, vocab_size: int, max_length: int, dim: int = 64, num_layers: int = 2, num_heads: int = 4):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"text_heads={num_heads} must divide text_dim={dim}")
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.position = nn.Embedding(max_length, dim)
        layer = nn.TransformerEncoderLayer(
            dim, num_heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self._measure(max_length)

    def forward(self, ids: Tensor) -> TextFeatures:
        ids = ids.long()
        mask = ids != 0
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.embedding(ids) + self.position(positions)
        ignore = ~mask
        ignore[:, 0] &= mask.any(1)  # an all-padding row attends to its first slot instead of to nothing (NaN)
        tokens = self.encoder(x, src_key_padding_mask=ignore)
        return TextFeatures(masked_mean(tokens, mask), tokens, mask)


#: the text encoders trained from scratch; ``"pretrained"`` is added by :mod:`mmrl.extractors.multimodal`
TEXT_ENCODERS: dict[str, type[TextEncoder]] = {
    "bag": BagOfEmbeddings,
    "gru": GRUEncoder,
    "transformer": TransformerTextEncoder,
}
