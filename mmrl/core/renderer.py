"""Compose observation images from a sprite atlas by tensor indexing.

An image is a ``rows x cols`` grid of square sprites. Rendering a batch is a single
``index_select`` of sprite *row strips*: the output image, viewed as rows of ``T`` pixels, is
gathered strip by strip from the atlas, so the gather writes the final layout directly and no
permuted copy follows. When the sprite width is a multiple of 8, a strip is moved as ``T / 8``
int64 words: per-pixel advanced indexing (``atlas[grid]``) moves one byte per index and is many times
slower than this, which moves a whole sprite row per index (BENCHMARKS.md compares it with a plain copy).
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
        if self._strips.shape[1] == 1:  # one word per strip: a 1-D gather has no inner loop
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
        # paste(): in units of w-byte words, where a sprite's words go in an image and come from in the atlas
        self._paste_word = 8 if tile % 8 == 0 and left % 8 == 0 and image_size % 8 == 0 else 1
        w = self._paste_word
        per_row = image_size // w  # words per image row
        c, y, k = torch.meshgrid(torch.arange(3), torch.arange(tile), torch.arange(tile // w), indexing="ij")
        self._paste_dst = ((c * image_size + y) * per_row + k).reshape(1, 1, -1).to(atlas.device)
        cell = torch.arange(rows * cols)
        self._cell_word = ((top + (cell // cols) * tile) * per_row + (left + (cell % cols) * tile) // w).to(atlas.device)
        self._paste_atlas = (self.atlas.view(torch.int64) if w == 8 else self.atlas).reshape(self.atlas.shape[0], -1)

    def background(self, sprite_ids: Tensor) -> Tensor:
        """``uint8[3, image_size, image_size]``: one image of ``sprite_ids`` ``int64[rows * cols]``, to
        :meth:`paste` sprites onto (e.g. the walls and floor of an empty room)."""
        return self.render(sprite_ids.reshape(1, -1))[0]

    def paste(self, images: Tensor, cells: Tensor, sprite_ids: Tensor) -> Tensor:
        """Draw sprites ``sprite_ids`` ``int64[B, M]`` over grid cells ``cells`` ``int64[B, M]`` (``row *
        cols + col``; a negative cell draws nothing) of ``images`` ``uint8[B, 3, S, S]``, in place; returns
        ``images``. A row's cells should be distinct (where two sprites share one, which shows is unspecified).

        A scene that is a fixed background plus a few sprites per image costs a copy of the background
        and ``M`` sprites per image, instead of a gather of every cell (:meth:`render`)."""
        batch = images.shape[0]
        if images.shape[1:] != (3, self.image_size, self.image_size) or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8[B, 3, {self.image_size}, {self.image_size}]; got {images.dtype} {tuple(images.shape)}")
        keep = cells >= 0
        if not bool(keep.all()):  # drop the sprites that draw nothing (their rows may differ in count)
            rows = torch.arange(batch, device=cells.device)[:, None].expand_as(cells)[keep][:, None]
            cells, sprite_ids = cells[keep][:, None], sprite_ids[keep]
        else:
            rows = torch.arange(batch, device=cells.device)[:, None].expand_as(cells).reshape(-1, 1)
            cells, sprite_ids = cells.reshape(-1, 1), sprite_ids.reshape(-1)
        image_words = 3 * self.image_size * self.image_size // self._paste_word
        # each sprite's words in the order they go (channel, row, word): whole atlas rows, gathered as rows
        dst = (rows * image_words + self._cell_word[cells]) + self._paste_dst.view(1, -1)
        target = images.view(torch.int64) if self._paste_word == 8 else images
        target.view(-1).scatter_(0, dst.view(-1), torch.index_select(self._paste_atlas, 0, sprite_ids).view(-1))
        return images

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


#: memory units a block paste may move, widest first: bytes -> dtype
_UNITS = ((16, torch.complex128), (8, torch.int64), (4, torch.int32), (2, torch.int16), (1, torch.uint8))


class BlockPaster:
    """Pastes blocks of pixels of one size (e.g. a 2x2-cell lesion) onto a batch of images, at positions chosen
    from a fixed table, as whole units of up to 16 bytes per scattered element.

    The unit is the widest that divides the image side, the block width and, after one common shift of the
    images in their buffer, every position's column: so each block row is whole units and a paste is one
    ``scatter_`` of ``3 * block_height * block_width / unit`` elements per block, whatever the image size (at
    worst bytes). Images are written into a buffer (:meth:`new_images`) with one spare image past the batch:
    rows told to ``skip`` paste there.

    :param blocks: ``uint8[N, 3, h, w]``, block ``i`` is ``blocks[i]``.
    :param image_size: side ``S`` of the square ``uint8[3, S, S]`` images.
    :param corners: ``int64[P, 2]``, pixel ``(y, x)`` of the top-left corner of each position a block may go.
    """

    def __init__(self, blocks: Tensor, image_size: int, corners: Tensor):
        if blocks.dtype != torch.uint8 or blocks.dim() != 4 or blocks.shape[1] != 3:
            raise ValueError(f"blocks must be uint8[N, 3, h, w]; got {blocks.dtype} {tuple(blocks.shape)}")
        height, width = blocks.shape[2:]
        corners = corners.cpu().to(torch.int64)
        if corners.dim() != 2 or corners.shape[1] != 2 or bool((corners < 0).any()):
            raise ValueError(f"corners must be non-negative int64[P, 2] pixel (y, x); got {tuple(corners.shape)}")
        if bool((corners[:, 0] + height > image_size).any() | (corners[:, 1] + width > image_size).any()):
            raise ValueError(f"a {height}x{width} block at one of the corners does not fit in {image_size}px")
        self.image_size, self.image_bytes = image_size, 3 * image_size * image_size
        x = corners[:, 1]
        self.unit, self.dtype = next(
            (size, dtype) for size, dtype in _UNITS
            if image_size % size == 0 and width % size == 0 and bool((x % size == x[0] % size).all())
        )  # fmt: skip
        unit = self.unit
        self.shift = int(-x[0]) % unit  # bytes before the first image: puts every corner's column on a unit boundary
        self._blocks = blocks.contiguous().view(self.dtype).reshape(blocks.shape[0], -1)
        channel, y, step = torch.meshgrid(torch.arange(3), torch.arange(height), torch.arange(width // unit), indexing="ij")
        row_start = channel.reshape(1, -1) * image_size * image_size + (corners[:, :1] + y.reshape(1, -1)) * image_size
        #: int64[P, units]: where each unit of a block at each position goes, in units from the image's start
        self._dst = (self.shift + row_start + corners[:, 1:]) // unit + step.reshape(1, -1)
        self._dst, self._blocks = self._dst.to(blocks.device), self._blocks.to(blocks.device)

    def new_images(self, batch: int) -> tuple[Tensor, Tensor]:
        """``(buffer, images)``: a fresh buffer for :meth:`paste` and the ``uint8[batch, 3, S, S]`` images in it
        (contiguous; fill them, e.g. with backgrounds, before pasting)."""
        size = -(-((batch + 1) * self.image_bytes + self.shift) // self.unit) * self.unit
        buffer = torch.empty(size, dtype=torch.uint8, device=self._blocks.device)
        images = buffer[self.shift : self.shift + batch * self.image_bytes].view(batch, 3, self.image_size, self.image_size)
        return buffer, images

    def paste(self, buffer: Tensor, positions: Tensor, block_ids: Tensor, skip: Tensor | None = None) -> None:
        """Paste block ``block_ids[b, m]`` at position ``positions[b, m]`` (indices into ``corners``) of image ``b``
        of ``buffer`` (from :meth:`new_images`), in place; rows where ``skip`` is true paste nothing."""
        batch, per_image = positions.shape
        image = torch.arange(batch, device=positions.device)
        if skip is not None:
            image = torch.where(skip, batch, image)  # the spare image: no row-dependent mask in the scatter
        corner = self._dst.index_select(0, positions.reshape(-1)).view(batch, per_image, self._dst.shape[1])
        dst = (image * (self.image_bytes // self.unit))[:, None, None] + corner
        src = self._blocks.index_select(0, block_ids.reshape(-1))
        buffer.view(self.dtype).scatter_(0, dst.view(-1), src.view(-1))
