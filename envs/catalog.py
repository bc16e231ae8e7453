"""Item catalogues for Recommend: a seeded procedural one, or one loaded from a folder on disk.

An item has a category, a colour, a pattern and a price (its price tier follows from the price), and
is genuine or clickbait (flashy, over-promising: Recommend's long-term setting). Each item has a square
RGB thumbnail; the price tier is drawn on every thumbnail as 1-4 pips along the top edge and a clickbait
item wears a black-and-white "flash" badge in its bottom-right corner, so that the image, and only the
image, shows what an item is, what it costs and whether it is clickbait.

A catalogue on disk is a folder with ``items.csv`` (columns ``id, title, category, colour, pattern,
price, image``; ``image`` is a path relative to the folder) and the images, of any size and format
that OpenCV reads.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

CATEGORIES = ("shirt", "shoe", "bag", "hat", "watch", "lamp", "mug", "chair")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "white")
PATTERNS = ("plain", "striped", "dotted", "checked")
#: Upper price bound (dollars) of each tier; a price p is in the first tier whose bound is >= p.
TIER_BOUNDS = (20, 50, 150, 500)
_TIER_LOW = (5, 20, 50, 150)

RGB = {
    "red": (225, 35, 35), "green": (40, 185, 60), "blue": (45, 95, 235), "yellow": (245, 225, 30),
    "purple": (150, 55, 205), "orange": (250, 135, 15), "pink": (250, 125, 195), "white": (240, 240, 240),
    "black": (70, 70, 70), "brown": (140, 85, 40), "grey": (150, 150, 150), "gray": (150, 150, 150),
    "cyan": (30, 220, 230), "navy": (20, 30, 120), "beige": (225, 205, 160),
}
CSV_COLUMNS = ("id", "title", "category", "colour", "pattern", "price", "image")
#: the most pixels a catalogue image may have (a 4096 x 4096 image): larger ones are refused before decoding
MAX_IMAGE_PIXELS = 4096 * 4096
#: words that cannot name a category or a colour (the vocabulary's reserved tokens)
RESERVED_WORDS = ("<pad>", "<unk>")


class CatalogError(ValueError):
    """A catalogue on disk is malformed; the message names the file, the row and what is wrong."""


@dataclass
class Catalog:
    """Items as parallel arrays plus their thumbnails ``uint8[I, 3, T, T]``."""

    categories: tuple[str, ...]
    colours: tuple[str, ...]
    patterns: tuple[str, ...]
    category: np.ndarray  # int64[I]
    colour: np.ndarray  # int64[I]
    pattern: np.ndarray  # int64[I]
    price: np.ndarray  # float32[I], dollars
    titles: tuple[str, ...]
    thumbnails: np.ndarray  # uint8[I, 3, T, T]
    clickbait: np.ndarray | None = None  # bool[I]; None: every item is genuine

    def __post_init__(self) -> None:
        self.tier = price_tier(self.price)
        if self.clickbait is None:
            self.clickbait = np.zeros(len(self.titles), dtype=bool)

    @property
    def num_items(self) -> int:
        return len(self.titles)

    @property
    def tile(self) -> int:
        return self.thumbnails.shape[-1]

    def combo_table(self, clickbait: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Genuine items (clickbait ones with ``clickbait``) by (category, colour): ``table int64[C, K, M]``,
        ``count int64[C, K]`` and the existing pairs ``int64[P, 2]``. An empty pair falls back to the
        category's items (or all items), so a draw from the table always yields an item."""
        n_cat, n_col = len(self.categories), len(self.colours)
        kind = self.clickbait == clickbait
        buckets = [[np.flatnonzero((self.category == c) & (self.colour == k) & kind) for k in range(n_col)] for c in range(n_cat)]
        pairs = [(c, k) for c in range(n_cat) for k in range(n_col) if len(buckets[c][k])]
        for c in range(n_cat):
            for k in range(n_col):
                if not len(buckets[c][k]):
                    fallback = np.flatnonzero((self.category == c) & kind)
                    buckets[c][k] = fallback if len(fallback) else np.arange(self.num_items)
        width = max(len(b) for row in buckets for b in row)
        table = np.zeros((n_cat, n_col, width), dtype=np.int64)
        count = np.zeros((n_cat, n_col), dtype=np.int64)
        for c in range(n_cat):
            for k in range(n_col):
                table[c, k, : len(buckets[c][k])] = buckets[c][k]
                count[c, k] = len(buckets[c][k])
        return torch.from_numpy(table), torch.from_numpy(count), torch.tensor(pairs, dtype=torch.int64)


def price_tier(price: np.ndarray) -> np.ndarray:
    """Tier index (0-3) of each price."""
    return np.minimum(np.searchsorted(np.asarray(TIER_BOUNDS, dtype=np.float64), price, side="left"), len(TIER_BOUNDS) - 1).astype(np.int64)


# ---------------------------------------------------------------------------- drawing
def _shape_mask(category: int, tile: int) -> np.ndarray:
    """bool[T, T] silhouette of a category (8 distinct shapes, drawn in unit coordinates)."""
    v, u = (np.mgrid[0:tile, 0:tile] + 0.5) / tile

    def box(u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
        return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)

    def ring(cu: float, cv: float, r0: float, r1: float) -> np.ndarray:
        d = np.hypot(u - cu, v - cv)
        return (d >= r0) & (d <= r1)

    shapes = [
        lambda: box(0.3, 0.7, 0.3, 0.9) | box(0.1, 0.9, 0.3, 0.48),  # shirt: a T
        lambda: box(0.2, 0.45, 0.25, 0.8) | box(0.2, 0.88, 0.6, 0.8),  # shoe: an L
        lambda: box(0.2, 0.8, 0.45, 0.88) | (ring(0.5, 0.45, 0.12, 0.2) & (v < 0.45)),  # bag with a handle
        lambda: box(0.08, 0.92, 0.68, 0.78) | box(0.3, 0.7, 0.3, 0.68),  # hat: brim and crown
        lambda: (np.hypot(u - 0.5, v - 0.55) <= 0.24) | box(0.42, 0.58, 0.2, 0.92),  # watch: face and band
        lambda: ((v >= 0.22) & (v <= 0.5) & (np.abs(u - 0.5) <= (v - 0.22) * 0.9 + 0.08))
        | box(0.46, 0.54, 0.5, 0.85) | box(0.3, 0.7, 0.85, 0.92),  # lamp: shade, stem, base
        lambda: box(0.22, 0.62, 0.3, 0.85) | (ring(0.66, 0.57, 0.08, 0.16) & (u > 0.62)),  # mug with a handle
        lambda: box(0.25, 0.75, 0.52, 0.62) | box(0.25, 0.34, 0.2, 0.52)
        | box(0.25, 0.32, 0.62, 0.92) | box(0.68, 0.75, 0.62, 0.92),  # chair
    ]
    return shapes[category % len(shapes)]()


def _pattern_mask(pattern: int, tile: int) -> np.ndarray:
    """bool[T, T]: where the pattern shows the full colour (elsewhere it is darkened)."""
    y, x = np.mgrid[0:tile, 0:tile]
    period = max(2, tile // 8)
    if pattern == 0:  # plain
        return np.ones((tile, tile), dtype=bool)
    if pattern == 1:  # striped
        return (y // period) % 2 == 0
    if pattern == 2:  # dotted
        return ~(((y % (2 * period)) < period) & ((x % (2 * period)) < period))
    return ((y // period) + (x // period)) % 2 == 0  # checked


def draw_price_pips(thumbnail: np.ndarray, tier: int) -> None:
    """Draw ``tier + 1`` white pips on a black band along the top of an RGB ``uint8[3, T, T]`` thumbnail."""
    tile = thumbnail.shape[-1]
    size = max(2, tile // 10)
    band = size + 2
    thumbnail[:, :band, :] = 0
    for i in range(tier + 1):
        x0 = 1 + i * (size + max(1, size // 2))
        thumbnail[:, 1 : 1 + size, x0 : x0 + size] = 255


def draw_clickbait_badge(thumbnail: np.ndarray) -> None:
    """Draw the clickbait "flash": a black-and-white checkered square in the bottom-right corner of an RGB
    ``uint8[3, T, T]`` thumbnail (a texture no item colour or pattern has)."""
    tile = thumbnail.shape[-1]
    size = max(4, tile // 4)
    y, x = np.mgrid[0:size, 0:size]
    thumbnail[:, tile - size :, tile - size :] = np.where((y + x) % 2 == 0, 255, 0).astype(np.uint8)[None]


def draw_item(
    category: int, colour_rgb: tuple[int, int, int], pattern: int, tier: int, tile: int, clickbait: bool = False
) -> np.ndarray:
    """A procedural thumbnail ``uint8[3, T, T]``: shape = category, fill = colour, texture = pattern, pips =
    price tier, and the flash badge on a clickbait item."""
    shape = _shape_mask(category, tile)
    on = _pattern_mask(pattern, tile)
    rgb = np.asarray(colour_rgb, dtype=np.float32)[:, None, None]
    fill = np.where(on[None], rgb, rgb * 0.4)
    image = np.where(shape[None], fill, np.float32(28.0)).astype(np.uint8)
    draw_price_pips(image, tier)
    if clickbait:
        draw_clickbait_badge(image)
    return image


# ---------------------------------------------------------------------------- catalogues
@functools.lru_cache(maxsize=8)
def procedural_catalog(
    tile: int, seed: int = 0, num_categories: int = 8, num_colours: int = 8, clickbait: bool = False
) -> Catalog:
    """Every combination of categories x colours x 4 patterns x 4 price tiers (8 x 8 x 4 x 4 = 1024 items
    by default; fewer categories or colours make an easier task); prices are drawn within their tier
    from ``seed``. With ``clickbait``, a clickbait twin of every item follows (same attributes and price,
    the flash badge). Cached: treat the result as read-only."""
    if not 2 <= num_categories <= len(CATEGORIES) or not 2 <= num_colours <= len(COLOURS):
        raise ValueError(
            f"num_categories and num_colours must be in [2, 8]; got {num_categories} and {num_colours}"
        )
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in (num_categories, num_colours, len(PATTERNS), len(TIER_BOUNDS))), indexing="ij"), -1).reshape(-1, 4)
    cat, col, pat, tier = grid.T
    low, high = np.asarray(_TIER_LOW)[tier], np.asarray(TIER_BOUNDS)[tier]
    price = np.round(low + (high - low) * rng.uniform(0.05, 1.0, size=len(grid)), 2).astype(np.float32)
    titles = tuple(f"{PATTERNS[p]} {COLOURS[k]} {CATEGORIES[c]}" for c, k, p in zip(cat, col, pat))
    thumbs = np.stack([draw_item(c, RGB[COLOURS[k]], p, t, tile) for c, k, p, t in grid])
    flags = np.zeros(len(grid), dtype=bool)
    if clickbait:
        twins = np.stack([draw_item(c, RGB[COLOURS[k]], p, t, tile, clickbait=True) for c, k, p, t in grid])
        cat, col, pat, price = (np.concatenate([a, a]) for a in (cat, col, pat, price))
        titles, thumbs, flags = titles + tuple(f"{t} (clickbait)" for t in titles), np.concatenate([thumbs, twins]), np.repeat([False, True], len(grid))
    return Catalog(
        CATEGORIES[:num_categories], COLOURS[:num_colours], PATTERNS, cat.astype(np.int64), col.astype(np.int64),
        pat.astype(np.int64), price, titles, thumbs, flags,
    )


def load_catalog(folder: str | Path, tile: int) -> Catalog:
    """Read ``folder/items.csv`` and its images; thumbnails are resized to ``tile`` pixels.

    Category and colour names become words of the env's vocabulary (single words, lower case);
    ``pattern`` must be one of :data:`PATTERNS`; ``price`` a positive number of dollars.
    Every problem raises :class:`CatalogError` naming the file, the row and the value.
    """
    import cv2  # imported here: only catalogues on disk need OpenCV

    folder = Path(folder)
    path = folder / "items.csv"
    if not path.is_file():
        raise CatalogError(f"{path}: no such file (a catalogue folder needs items.csv)")
    try:  # utf-8-sig: a byte-order mark (as Excel writes one) is not part of the first column's name
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, restkey="\0extra")
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise CatalogError(f"{path}: missing column(s) {missing}; expected columns {list(CSV_COLUMNS)}, got {reader.fieldnames}")
            rows = list(reader)
    except UnicodeDecodeError as error:
        raise CatalogError(
            f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start}); save it as UTF-8"
        ) from None
    root = folder.resolve()
    if not rows:
        raise CatalogError(f"{path}: no items")
    categories: list[str] = []
    colours: list[str] = []
    cat, col, pat, price, titles, thumbs = [], [], [], [], [], []
    seen_ids: set[str] = set()
    for line, row in enumerate(rows, start=2):
        where = f"{path}, row {line} (id {row['id']!r})"
        if "\0extra" in row or None in row.values():
            fields = len(CSV_COLUMNS) + len(row.get("\0extra") or []) - sum(v is None for v in row.values())
            raise CatalogError(f"{where}: {fields} fields; every row needs the {len(reader.fieldnames or [])} columns of the header")
        if row["id"] in seen_ids:
            raise CatalogError(f"{where}: duplicate id")
        seen_ids.add(row["id"])
        for column in ("category", "colour"):
            word = (row[column] or "").strip().lower()
            if not word or " " in word or word in RESERVED_WORDS:
                raise CatalogError(f"{where}: {column} must be one word (not {' or '.join(RESERVED_WORDS)}); got {row[column]!r}")
        pattern = (row["pattern"] or "").strip().lower()
        if pattern not in PATTERNS:
            raise CatalogError(f"{where}: pattern {row['pattern']!r} is not one of {list(PATTERNS)}")
        try:
            value = float(row["price"])
        except (TypeError, ValueError):
            raise CatalogError(f"{where}: price {row['price']!r} is not a number") from None
        if not np.isfinite(value) or value <= 0:
            raise CatalogError(f"{where}: price must be a positive number of dollars; got {row['price']!r}")
        image_path = folder / (row["image"] or "")
        if not image_path.resolve().is_relative_to(root):
            raise CatalogError(f"{where}: image path {row['image']!r} leads outside the catalogue folder {str(folder)!r}")
        if not row["image"] or not image_path.is_file():
            raise CatalogError(f"{where}: image file {str(image_path)!r} does not exist")
        pixels = _image_pixels(image_path)
        if pixels > MAX_IMAGE_PIXELS:
            raise CatalogError(f"{where}: image file {str(image_path)!r} has {pixels:,} pixels; at most {MAX_IMAGE_PIXELS:,}")
        bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CatalogError(f"{where}: image file {str(image_path)!r} could not be read as an image")
        rgb = cv2.cvtColor(cv2.resize(bgr, (tile, tile), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        category, colour = row["category"].strip().lower(), row["colour"].strip().lower()
        if category not in categories:
            categories.append(category)
        if colour not in colours:
            colours.append(colour)
        cat.append(categories.index(category))
        col.append(colours.index(colour))
        pat.append(PATTERNS.index(pattern))
        price.append(value)
        titles.append(row["title"] or f"{colour} {category}")
        thumb = np.ascontiguousarray(rgb.transpose(2, 0, 1))
        draw_price_pips(thumb, int(price_tier(np.asarray([value]))[0]))
        thumbs.append(thumb)
    clash = sorted(set(categories) & set(colours))
    if clash:
        raise CatalogError(f"{path}: {clash} name both a category and a colour; the shopper's words must tell them apart")
    if len(categories) < 2 or len(colours) < 2:
        raise CatalogError(f"{path}: needs at least 2 categories and 2 colours; got {categories} and {colours}")
    return Catalog(
        tuple(categories), tuple(colours), PATTERNS, np.asarray(cat, np.int64), np.asarray(col, np.int64),
        np.asarray(pat, np.int64), np.asarray(price, np.float32), tuple(titles), np.stack(thumbs),
    )


def _image_pixels(path: Path) -> int:
    """Width x height of an image from its header alone (no decoding); 0 where the header is not readable (the
    decoder then says so)."""
    from PIL import Image

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # only the header is read: no bomb to defuse
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - an unreadable header: cv2.imread reports the file
        return 0
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return width * height
