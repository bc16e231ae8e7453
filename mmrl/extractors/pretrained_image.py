"""A pretrained Hugging Face image encoder (ViT, CLIP's vision tower, ResNet ...), frozen, with a feature cache.

:class:`PretrainedImageEncoder` resizes the env's images (float32[B, 3, H, W] in [0, 1], as SB3 hands them over) to
the size the model's image processor asks for with ``torch.nn.functional.interpolate``, normalises them with the
processor's mean and std, runs the model (``AutoModel``) and turns its last hidden state into a feature map: a
convolutional model's map as it is, a vision transformer's patch tokens laid back on their grid. The map is
average-pooled to at most ``grid x grid`` cells and a trained ``1x1 conv + ReLU`` projects it to ``channels``, so the
fusions (FiLM, cross-attention ...) use it like a CNN's map.

Cost. A frozen model runs under ``torch.no_grad`` on the images the batch has not seen, in chunks of ``max_batch``.
Its pooled maps are kept in an :class:`ImageFeatureCache` keyed by a 128-bit hash of the image's 8-bit pixels,
computed on the images' device (only the keys reach the host). Even when an env never shows the same image twice,
PPO encodes each observation once when it acts and again in every epoch of the update: with the cache the model
runs once per observation and the epochs read the stored maps. The oldest entries are dropped first
(``cache_size`` maps at most).

The model is loaded from a local folder (``save_pretrained`` output of the model and of its image processor) with
``local_files_only=True``; nothing is downloaded. As for the pretrained text encoder, a frozen model is kept out of
the module tree: it is neither in the policy's ``state_dict`` nor in its optimiser, and the folder must still exist
when a saved agent is loaded.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmrl.extractors.image_encoders import ImageEncoder

#: the image processor's settings file, which fixes the input size and the normalisation
PROCESSOR_FILE = "preprocessor_config.json"


class ImageInput(NamedTuple):
    """What the model expects, from its image processor."""

    size: tuple[int, int]
    """(height, width) the images are resized to."""
    scale: float
    """Factor from SB3's [0, 1] pixels to the processor's before normalising (1 for the usual ``rescale_factor=1/255``)."""
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _side(size: Any, name: str) -> int | None:
    """``size[name]`` of a processor's size (a dict or a ``SizeDict``), ``None`` when absent."""
    value = size.get(name) if isinstance(size, dict) else getattr(size, name, None)
    return None if value is None else int(value)


def image_input(processor: Any, path: str) -> ImageInput:
    """The input size and normalisation of an image processor (``ViTImageProcessor``, ``CLIPImageProcessor`` ...).

    A centre crop is not applied: the env's image is resized to the crop size whole, since a crop would cut off the
    slate's outer items. ``shortest_edge`` gives a square (env images are square)."""
    size = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    size = size if size is not None else getattr(processor, "size", None)
    if isinstance(size, int):
        height = width = size
    elif size is not None and _side(size, "height") and _side(size, "width"):
        height, width = _side(size, "height"), _side(size, "width")
    elif size is not None and _side(size, "shortest_edge"):
        height = width = _side(size, "shortest_edge")
    else:
        raise ValueError(f"cannot read the input size of the image processor in {path!r} (size={size!r})")
    if getattr(processor, "do_normalize", True):
        mean, std = tuple(processor.image_mean), tuple(processor.image_std)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    # The processor maps 8-bit pixels p to p * rescale_factor (or leaves them) before normalising; SB3 gives p / 255.
    scale = 255.0 * float(getattr(processor, "rescale_factor", 1 / 255)) if getattr(processor, "do_rescale", True) else 255.0
    return ImageInput(
        (int(height), int(width)), scale, tuple(float(m) for m in mean), tuple(float(s) for s in std)
    )


def check_model_folder(path: str | os.PathLike[str] | None) -> str:
    """The resolved folder of a vision model; ``ValueError`` saying what is missing."""
    if path is None:
        raise ValueError(
            "image_encoder='pretrained' needs pretrained_image_path=<a local folder with a Hugging Face vision model "
            "(ViT, CLIP vision, ResNet ...) and its image processor, written by save_pretrained>. Nothing is downloaded"
        )
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(
            f"pretrained_image_path {str(path)!r} is not a folder (expected the save_pretrained output of a Hugging Face "
            f"vision model and of its image processor)"
        )
    for name, fix in (("config.json", "model.save_pretrained(folder)"), (PROCESSOR_FILE, "AutoImageProcessor.from_pretrained(<model id>).save_pretrained(folder)")):  # fmt: skip
        if not (folder / name).is_file():
            raise ValueError(f"the pretrained image model folder {str(folder)!r} has no {name}: save it with {fix}")
    return str(folder.resolve())


def _vision_model(model: nn.Module, path: str) -> nn.Module:
    """The part of ``model`` that takes ``pixel_values``: the model itself or its ``vision_model`` (CLIP, SigLIP)."""
    if getattr(model, "main_input_name", None) == "pixel_values":
        return model
    vision = getattr(model, "vision_model", None)
    if isinstance(vision, nn.Module):
        return vision
    raise ValueError(
        f"the model in {path!r} ({type(model).__name__}) is not a vision model: its input is "
        f"{getattr(model, 'main_input_name', '?')!r}, not 'pixel_values'"
    )


def load_vision_model(path: str, freeze: bool) -> tuple[ImageInput, nn.Module]:
    """The input settings and the vision model of the folder ``path`` (frozen and in eval mode when ``freeze``)."""
    from transformers import AutoImageProcessor, AutoModel

    try:
        processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"cannot load a Hugging Face vision model from {path!r}: {error}") from None
    model = _vision_model(model, path)
    if freeze:
        model.eval()
        model.requires_grad_(False)
    return image_input(processor, path), model


@functools.lru_cache(maxsize=4)
def _load_frozen(path: str) -> tuple[ImageInput, nn.Module]:
    """One frozen copy per folder, shared by every frozen encoder of the process (a DQN's two networks, ...)."""
    return load_vision_model(path, freeze=True)


def hidden_to_map(hidden: Tensor) -> Tensor:
    """The model's last hidden state as a feature map float32[B, C, h, w].

    A convolutional model's ``[B, C, h, w]`` is kept; a transformer's tokens ``[B, T, C]`` are its patches on a
    square grid after a few leading special tokens (CLS, distillation, registers), which are dropped."""
    if hidden.dim() == 4:
        return hidden
    if hidden.dim() != 3:
        raise ValueError(f"cannot read a feature map from a last hidden state of shape {tuple(hidden.shape)}")
    tokens = hidden.shape[1]
    side = math.isqrt(tokens)
    if side == 0 or tokens - side * side >= side:
        raise ValueError(f"the model's {tokens} output tokens do not form a square grid of patches")
    patches = hidden[:, tokens - side * side :]
    return patches.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[2], side, side)


class ImageFeatureCache:
    """Pooled feature maps float32[N, C, h, w] keyed by a hash of the image; the oldest entry goes first when full.

    :param capacity: maps kept at most.
    :param model: the model's folder (or any name identifying the model and its settings).
    """

    def __init__(self, capacity: int, model: str):
        if capacity < 1:
            raise ValueError(f"an image feature cache needs capacity >= 1; got {capacity}")
        self.capacity = int(capacity)
        self.model = str(model)
        self.index: dict[tuple[int, int], int] = {}
        self._slot_keys: list[tuple[int, int] | None] = []
        self._table: Tensor | None = None  # float32[rows, C, h, w], rows grows up to capacity
        self._inserted = 0
        self.hits = 0
        """Images answered from the cache (a repeat within one batch counts as a hit)."""
        self.misses = 0
        """Images the model had to encode."""

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"ImageFeatureCache({len(self)}/{self.capacity} maps, hits={self.hits}, misses={self.misses}, model={self.model!r})"

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        self.index.clear()
        self._slot_keys.clear()
        self._table = None
        self._inserted = self.hits = self.misses = 0

    def lookup(self, keys: Sequence[tuple[int, int]]) -> list[int]:
        """Table rows of ``keys`` (-1 where absent)."""
        get = self.index.get
        return [get(key, -1) for key in keys]

    def rows(self, positions: Sequence[int], device: torch.device) -> Tensor:
        """The maps at ``positions``, on ``device``."""
        assert self._table is not None
        return self._table[torch.as_tensor(positions, device=self._table.device)].to(device)

    def insert(self, keys: Sequence[tuple[int, int]], maps: Tensor) -> None:
        """Add new entries (distinct keys not in the cache); beyond ``capacity`` the oldest ones are dropped."""
        keys, maps = list(keys)[-self.capacity :], maps[-self.capacity :].detach()
        if not keys:
            return
        needed = min(self.capacity, len(self._slot_keys) + len(keys))
        if self._table is None or self._table.device != maps.device or self._table.shape[1:] != maps.shape[1:]:
            self.index.clear()
            self._slot_keys.clear()
            self._inserted = 0
            self._table = None
            needed = len(keys)
        if self._table is None or self._table.shape[0] < needed:
            rows = min(self.capacity, max(needed, 2 * (0 if self._table is None else self._table.shape[0]), 64))
            grown = torch.empty(rows, *maps.shape[1:], dtype=maps.dtype, device=maps.device)
            if self._table is not None:
                grown[: self._table.shape[0]] = self._table
            self._table = grown
        slots = []
        for key in keys:
            slot = self._inserted % self.capacity
            self._inserted += 1
            if slot < len(self._slot_keys):
                old = self._slot_keys[slot]
                if old is not None:
                    self.index.pop(old, None)
                self._slot_keys[slot] = key
            else:
                self._slot_keys.append(key)
            self.index[key] = slot
            slots.append(slot)
        self._table[torch.as_tensor(slots, device=maps.device)] = maps


class PretrainedImageTrunk(nn.Module):
    """Resize + normalise + (frozen) Hugging Face vision model + pooling + trained ``1x1 conv + ReLU``.

    Images float32[B, 3, H, W] in [0, 1] -> feature map float32[B, channels, g, g]. See the module docstring.

    :param image_shape: ``(C, H, W)`` of the observation space (C must be the model's input channels, 3).
    :param path: the model folder.
    :param channels: output channels of the trained projection.
    :param grid: the map is average-pooled to at most ``grid x grid`` cells.
    :param freeze: keep the model's weights fixed (default); ``False`` fine-tunes it (no cache then).
    :param cache_size: maps kept in the cache (0: no cache; frozen model only).
    :param cache: an :class:`ImageFeatureCache` to use (and share, e.g. between a DQN's two networks).
    :param max_batch: images per model call (bounds the activation memory of a large model on a large batch).
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        path: str | os.PathLike[str] | None,
        channels: int = 64,
        grid: int = 4,
        freeze: bool = True,
        cache_size: int = 4096,
        cache: ImageFeatureCache | None = None,
        max_batch: int = 256,
    ):
        super().__init__()
        if channels < 1 or grid < 1 or max_batch < 1 or cache_size < 0:
            raise ValueError(
                f"pretrained image encoder: channels, grid and max_batch must be >= 1 and cache_size >= 0; got "
                f"channels={channels}, grid={grid}, max_batch={max_batch}, cache_size={cache_size}"
            )
        self.path = check_model_folder(path)
        self.freeze, self.grid, self.max_batch = freeze, int(grid), int(max_batch)
        if freeze:
            self._frozen = _load_frozen(self.path)  # a tuple: not registered as a submodule
            settings = self._frozen[0]
        else:
            settings, self.model = load_vision_model(self.path, freeze=False)
        self.input = settings
        in_channels = int(getattr(self.hf_model.config, "num_channels", 3))
        if int(image_shape[0]) != in_channels or len(settings.mean) != in_channels:
            raise ValueError(
                f"the pretrained image model in {self.path!r} takes {in_channels}-channel images; the observation "
                f"has {int(image_shape[0])} channels (shape {tuple(image_shape)})"
            )
        self.register_buffer("mean", torch.tensor(settings.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(settings.std).view(1, -1, 1, 1), persistent=False)
        # Two random linear hashes of the 8-bit pixels. The weights are small enough that the int64 sum cannot
        # overflow, so a key is exact whatever the batch, the device or the order of the sum; two distinct images
        # share a key only if both random weightings of their difference are 0 (probability < 2**-70).
        pixels = math.prod(int(s) for s in image_shape)
        weight_bits = 62 - 8 - max(1, math.ceil(math.log2(pixels)))
        generator = torch.Generator().manual_seed(0)
        weights = torch.randint(0, 2**weight_bits, (2, pixels), generator=generator, dtype=torch.int64)
        self.register_buffer("hash_weights", weights, persistent=False)
        if cache is not None and not freeze:
            raise ValueError("an image feature cache needs a frozen model (fine-tuned features change)")
        self.cache: ImageFeatureCache | None = None
        if freeze and (cache is not None or cache_size > 0):
            self.cache = cache if cache is not None else ImageFeatureCache(cache_size, self.path)
        with torch.no_grad():  # the model's map size, without touching the cache
            probe = self.encode(torch.zeros(1, *(int(s) for s in image_shape)))
        self.feature_channels = int(probe.shape[1])
        self.projection = nn.Sequential(nn.Conv2d(self.feature_channels, channels, 1), nn.ReLU())

    @property
    def hf_model(self) -> nn.Module:
        """The Hugging Face vision model."""
        return self._frozen[1] if self.freeze else self.model

    def encode(self, images: Tensor) -> Tensor:
        """The model's pooled map float32[B, C_model, g, g] of images float32[B, 3, H, W] in [0, 1], in chunks."""
        model = self.hf_model
        if next(model.parameters()).device != images.device:
            model.to(images.device)
        maps = []
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            for chunk in images.split(self.max_batch):
                pixels = F.interpolate(chunk, size=self.input.size, mode="bilinear", align_corners=False, antialias=True)
                pixels = (pixels * self.input.scale - self.mean) / self.std
                feature_map = hidden_to_map(model(pixel_values=pixels).last_hidden_state)
                side = (min(self.grid, feature_map.shape[2]), min(self.grid, feature_map.shape[3]))
                maps.append(F.adaptive_avg_pool2d(feature_map, side).float())
        return torch.cat(maps)

    def image_keys(self, images: Tensor) -> list[tuple[int, int]]:
        """One 128-bit key per image float32[B, C, H, W] in [0, 1] (its 8-bit pixels hashed on its device)."""
        pixels = (images.detach().flatten(1) * 255).round().long()
        keys = torch.stack([(pixels * w).sum(1) for w in self.hash_weights], dim=1)  # int64[B, 2], exact
        return [(int(a), int(b)) for a, b in keys.tolist()]

    def features(self, images: Tensor) -> Tensor:
        """The model's pooled maps, from the cache where it has them."""
        if self.cache is None:
            return self.encode(images)
        keys = self.image_keys(images)
        positions = self.cache.lookup(keys)
        missing: dict[tuple[int, int], int] = {}  # new image -> its first row in the batch
        for row, (key, position) in enumerate(zip(keys, positions)):
            if position < 0 and key not in missing:
                missing[key] = row
        self.cache.misses += len(missing)
        self.cache.hits += len(keys) - len(missing)
        if not missing:
            return self.cache.rows(positions, images.device)
        with torch.no_grad():
            new = self.encode(images[list(missing.values())])
        slot = {key: j for j, key in enumerate(missing)}
        out = torch.empty(len(keys), *new.shape[1:], dtype=new.dtype, device=new.device)
        stored = [i for i, p in enumerate(positions) if p >= 0]
        if stored:
            out[stored] = self.cache.rows([positions[i] for i in stored], new.device)
        unstored = [i for i, p in enumerate(positions) if p < 0]
        out[unstored] = new[[slot[keys[i]] for i in unstored]]
        self.cache.insert(list(missing), new)
        return out

    def forward(self, images: Tensor) -> Tensor:
        """:param images: float32[B, 3, H, W] in [0, 1].
        :return: the projected map float32[B, channels, g, g]."""
        return self.projection(self.features(images))


class PretrainedImageEncoder(ImageEncoder):
    """``image_encoder="pretrained"``: an :class:`ImageEncoder` whose trunk is a :class:`PretrainedImageTrunk`.

    :param image_shape: ``(C, H, W)`` of the observation space.
    :param path: the model folder.
    :param kwargs: the trunk's other arguments (``channels``, ``grid``, ``freeze``, ``cache_size``, ``cache``).
    """

    def __init__(self, image_shape: Sequence[int], path: str | os.PathLike[str] | None, **kwargs: Any):
        trunk = PretrainedImageTrunk(image_shape, path, **kwargs)
        cache, trunk.cache = trunk.cache, None  # the measuring forward of ImageEncoder is not a lookup to count
        super().__init__("pretrained", trunk, image_shape)
        trunk.cache = cache

    @property
    def cache(self) -> ImageFeatureCache | None:
        """The feature cache (``None`` without one)."""
        return self.trunk.cache

    @property
    def cache_hits(self) -> int:
        return 0 if self.cache is None else self.cache.hits

    @property
    def cache_misses(self) -> int:
        return 0 if self.cache is None else self.cache.misses

    @property
    def hf_model(self) -> nn.Module:
        """The Hugging Face vision model."""
        return self.trunk.hf_model
