"""Image encoders: convolutional trunks that keep a spatial feature map.

An encoder maps images float32[B, C, H, W] (channel-first, already scaled to [0, 1] by SB3's
preprocessing of a uint8 image space) to a feature map float32[B, C', h, w]. Fusion modules use the
map itself (FiLM modulates its channels, cross-attention reads its cells as patches) or its
flattened vector (:meth:`ImageEncoder.pool`, parameter-free, so every parameter of the encoder is
used whatever the fusion). Output sizes are measured by a dummy forward at construction.

- ``cnn``: three stride-2 4x4 convolutions, for 32-64 px images (64 px -> 8x8 map).
- ``nature``: the NatureCNN layout (8x8/4, 4x4/2, 3x3/1; Mnih et al. 2015), for images of 36 px or more.
- ``impala``: the IMPALA ResNet (Espeholt et al. 2018): per stage a 3x3 convolution, a 3x3/2 max-pool
  and two residual blocks.
- ``patch``: a tile-aligned stem, non-overlapping 4x4 patches (as a ViT's patch embedding), then patch
  merging (as Swin's) per further width. Every pixel is read once, so on a CPU it costs a third of ``cnn``
  at the same map size; the renderers draw on 4 px cells and thumbnails of 8, 12 or 16 px, which these
  patches and merges tile exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn


class ImageEncoder(nn.Module):
    """A convolutional trunk whose output feature-map shape is measured on a dummy image.

    :param name: the encoder's name (for messages).
    :param trunk: maps float32[B, C, H, W] to float32[B, C', h, w].
    :param image_shape: ``(C, H, W)`` of the observation space.
    """

    def __init__(self, name: str, trunk: nn.Module, image_shape: Sequence[int]):
        super().__init__()
        self.name = name
        self.trunk = trunk
        self.image_shape = tuple(int(s) for s in image_shape)
        try:
            with torch.no_grad():
                feature_map = trunk(torch.zeros(1, *self.image_shape))
        except RuntimeError as error:  # a convolution larger than its input
            smallest = " (NatureCNN's 8x8/4, 4x4/2, 3x3 convolutions need 36 px or more)" if name == "nature" else ""
            raise ValueError(
                f"image_encoder={name!r} cannot encode images of shape {self.image_shape}: {error}. "
                f"Use larger images{smallest} or image_encoder='cnn' (works from 16 px)"
            ) from None
        self.feature_shape: tuple[int, int, int] = tuple(feature_map.shape[1:])  # type: ignore[assignment]

    @property
    def out_channels(self) -> int:
        """C', the channels of the feature map."""
        return self.feature_shape[0]

    @property
    def pooled_dim(self) -> int:
        """Size of :meth:`pool`'s vector, ``C' * h * w``."""
        return math.prod(self.feature_shape)

    def forward(self, images: Tensor) -> Tensor:
        """:param images: float32[B, C, H, W] in [0, 1].
        :return: the feature map float32[B, C', h, w]."""
        return self.trunk(images)

    @staticmethod
    def pool(feature_map: Tensor) -> Tensor:
        """The feature map flattened, float32[B, C' * h * w] (keeps where things are, as NatureCNN does)."""
        return feature_map.flatten(1)


class ResidualBlock(nn.Module):
    """``x + conv(relu(conv(relu(x))))`` with 3x3 convolutions (IMPALA)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


def small_cnn(image_shape: Sequence[int], channels: Sequence[int] = (16, 32, 32)) -> nn.Module:
    """Stride-2 4x4 convolutions, one per entry of ``channels`` (each halves the side)."""
    layers: list[nn.Module] = []
    in_channels = int(image_shape[0])
    for out in channels:
        layers += [nn.Conv2d(in_channels, out, 4, stride=2, padding=1), nn.ReLU()]
        in_channels = out
    return nn.Sequential(*layers)


def nature_cnn(image_shape: Sequence[int], channels: Sequence[int] = (32, 64, 64)) -> nn.Module:
    """The NatureCNN trunk (without its linear head)."""
    if len(channels) != 3:
        raise ValueError(f"image_encoder='nature' takes 3 image_channels; got {tuple(channels)}")
    c0, c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(int(image_shape[0]), c0, 8, stride=4), nn.ReLU(),
        nn.Conv2d(c0, c1, 4, stride=2), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, stride=1), nn.ReLU(),
    )  # fmt: skip


def impala_cnn(image_shape: Sequence[int], channels: Sequence[int] = (16, 32, 32)) -> nn.Module:
    """The IMPALA ResNet trunk: one stage (conv, max-pool /2, two residual blocks) per entry of ``channels``."""
    layers: list[nn.Module] = []
    in_channels = int(image_shape[0])
    for out in channels:
        layers += [
            nn.Conv2d(in_channels, out, 3, padding=1),
            nn.MaxPool2d(3, stride=2, padding=1),
            ResidualBlock(out),
            ResidualBlock(out),
        ]
        in_channels = out
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _smallest_factor(side: int) -> int:
    """The smallest factor >= 2 of ``side`` (``side`` itself when prime; 1 for a side of 1)."""
    return next((f for f in range(2, side + 1) if side % f == 0), 1)


def patch_cnn(image_shape: Sequence[int], channels: Sequence[int] = (16, 32)) -> nn.Module:
    """A 4x4/4 patch stem to ``channels[0]``, then one merge (a convolution whose stride is its kernel) per
    further width.

    Each merge joins the smallest block of cells that tiles the map exactly (2x2 on a side of 8 or 16, 3x3 on a
    side of 9), so no pixel is dropped and a 36 px image of 12 px thumbnails ends as one cell per thumbnail.
    """
    in_channels, height, width = (int(s) for s in image_shape)
    if height % 4 or width % 4:
        raise ValueError(
            f"image_encoder='patch' reads 4x4 patches, so the image's sides must be multiples of 4; got {height}x{width}. "
            "Use an image_size that is a multiple of 4 or image_encoder='cnn'"
        )
    size, (height, width) = (4, 4), (height // 4, width // 4)
    layers: list[nn.Module] = []
    for out in channels:
        layers += [nn.Conv2d(in_channels, out, size, stride=size), nn.ReLU()]
        in_channels, size = out, (_smallest_factor(height), _smallest_factor(width))
        height, width = height // size[0], width // size[1]
    return nn.Sequential(*layers)


#: name -> trunk builder ``(image_shape (C, H, W), channels) -> nn.Module``
IMAGE_ENCODERS: dict[str, Callable[..., nn.Module]] = {"cnn": small_cnn, "nature": nature_cnn, "impala": impala_cnn, "patch": patch_cnn}


def make_image_encoder(name: str, image_shape: Sequence[int], channels: Sequence[int] | None = None) -> ImageEncoder:
    """Build the image encoder ``name`` for images of shape ``(C, H, W)``.

    :param channels: conv widths; ``None`` = the encoder's default.
    """
    if name not in IMAGE_ENCODERS:
        raise ValueError(f"unknown image_encoder {name!r}; valid choices: {sorted(IMAGE_ENCODERS)}")
    if len(image_shape) != 3:
        raise ValueError(f"image_encoder={name!r} needs a channel-first image (C, H, W); got shape {tuple(image_shape)}")
    if channels is not None and (len(channels) == 0 or any(int(c) < 1 for c in channels)):
        raise ValueError(f"image_channels must be positive widths; got {tuple(channels)}")
    build = IMAGE_ENCODERS[name]
    trunk = build(image_shape) if channels is None else build(image_shape, tuple(int(c) for c in channels))
    return ImageEncoder(name, trunk, image_shape)
