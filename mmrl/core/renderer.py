"""Compose observation images from a sprite atlas by tensor indexing.

An image is a ``rows x cols`` grid of square sprites. Rendering a batch is one gather of whole
sprites (contiguous blocks) and one permuted copy into the image layout. When the sprite width is
a multiple of 8 the copy moves 8-byte words instead of bytes (see FACTS.md: naive per-pixel advanced
indexing is ~40x slower than a copy; moving rows as int64 words is ~6x faster than that).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class SpriteRenderer:
    """Renders ``uint8[B, 3, H, W]`` images from sprite ids ``int64[B, rows * cols]``.

    :param atlas: ``uint8[S, 3, T, T]`` sprites (id ``s`` is ``atlas[s]``).
    :param rows: grid rows.
    :param cols: grid columns.
    :param image_size: output height and width; the grid (``rows*T x cols*T``) is centred and the
        border is black. Must be at least ``max(rows, cols) * T``.
    """

    def __init__(self, atlas: Tensor, rows: int, cols: int, image_size: int):
        if atlas.dtype != torch.uint8 or atlas.dim() != 4 or atlas.shape[1] != 3 or atlas.shape[2] != atlas.shape[3]:
            raise ValueError(f"atlas must be uint8[S, 3, T, T]; got {tuple(atlas.shape)} {atlas.dtype}")
        tile = atlas.shape[-1]
        if max(rows, cols) * tile > image_size:
            raise ValueError(f"a {rows}x{cols} grid of {tile}px sprites does not fit in {image_size}px")
        self.rows, self.cols, self.tile, self.image_size = rows, cols, tile, image_size
        self.atlas = atlas.contiguous()
        self._word = 8 if tile % 8 == 0 else 1
        self._atlas_words = self.atlas.view(torch.int64) if self._word == 8 else self.atlas
        top = (image_size - rows * tile) // 2
        left = (image_size - cols * tile) // 2
        self._pad = (left, image_size - cols * tile - left, top, image_size - rows * tile - top)

    def to(self, device: torch.device | str) -> "SpriteRenderer":
        """A copy of this renderer with its atlas on ``device``."""
        return SpriteRenderer(self.atlas.to(device), self.rows, self.cols, self.image_size)

    @property
    def num_sprites(self) -> int:
        return self.atlas.shape[0]

    def render(self, sprite_ids: Tensor) -> Tensor:
        """``int64[B, rows * cols]`` sprite ids to ``uint8[B, 3, image_size, image_size]``."""
        batch = sprite_ids.shape[0]
        tiles = self._atlas_words[sprite_ids]  # [B, R*C, 3, T, T/w]
        tiles = tiles.view(batch, self.rows, self.cols, 3, self.tile, -1)
        grid = tiles.permute(0, 3, 1, 4, 2, 5).contiguous()  # [B, 3, R, T, C, T/w]
        if self._word == 8:
            grid = grid.view(torch.uint8)
        image = grid.view(batch, 3, self.rows * self.tile, self.cols * self.tile)
        if any(self._pad):
            image = F.pad(image, self._pad)
        return image
