"""Compose observation images from a sprite atlas by tensor indexing.

An image is a ``rows x cols`` grid of square sprites. Rendering a batch is a single
``index_select`` of sprite *row strips*: the output image, viewed as rows of ``T`` pixels, is
gathered strip by strip from the atlas, so the gather writes the final layout directly and no
permuted copy follows. When the sprite width is a multiple of 8, a strip is moved as ``T / 8``
int64 words. (FACTS.md: naive per-pixel advanced indexing runs ~40x slower than a copy; here the
gather runs within ~3x of a plain copy of the image bytes, see BENCHMARKS.md.)
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
        words = self.atlas.view(torch.int64) if self._word == 8 else self.atlas
        self._strips = words.reshape(-1, tile // self._word)  # [S * 3 * T, T / w]: one sprite row each
        if self._strips.shape[1] == 1:  # one word per strip: a 1-D gather is several times faster
            self._strips = self._strips.view(-1)
        # For each output strip, in output order (channel, grid row, row in sprite, grid column):
        # which grid cell it comes from, and its strip offset within that cell's sprite.
        c, r, y, x = torch.meshgrid(
            torch.arange(3), torch.arange(rows), torch.arange(tile), torch.arange(cols), indexing="ij"
        )
        self._cell_of_strip = (r * cols + x).reshape(1, -1).to(atlas.device)
        self._offset_of_strip = (c * tile + y).reshape(1, -1).to(atlas.device)
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
        first_strip = sprite_ids * (3 * self.tile)
        index = first_strip.gather(1, self._cell_of_strip.expand(batch, -1)).add_(self._offset_of_strip).view(-1)
        strips = torch.index_select(self._strips, 0, index)
        if self._word == 8:
            strips = strips.view(torch.uint8)
        image = strips.view(batch, 3, self.rows * self.tile, self.cols * self.tile)
        if any(self._pad):
            image = F.pad(image, self._pad)
        return image
