"""Procedural sprites for the grid and scan environments, drawn once in numpy at construction.

Shapes are drawn in unit coordinates (pixel centres in ``[0, 1)``) so that one definition serves
every tile size; the env's :class:`~mmrl.core.renderer.SpriteRenderer` then composes observation
images from these sprites by tensor indexing. Nothing here runs per step.
"""

from __future__ import annotations

import numpy as np

from mmrl.envs.catalog import RGB

#: Object colours of the grid world, in vocabulary order (a ``num_colours`` prefix is used).
GRID_COLOURS = ("red", "green", "blue", "purple", "yellow", "orange", "pink", "cyan")
#: Object kinds of the grid world, in vocabulary order.
GRID_KINDS = ("ball", "box", "key")

FLOOR_RGB = (24, 24, 28)
WALL_RGB = (110, 110, 118)
AGENT_RGB = (245, 245, 245)


def unit_grid(tile: int) -> tuple[np.ndarray, np.ndarray]:
    """``(u, v)`` float64[T, T]: x and y of each pixel centre in ``[0, 1)`` (``v`` grows downwards)."""
    v, u = (np.mgrid[0:tile, 0:tile] + 0.5) / tile
    return u, v


def _box(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def kind_mask(kind: int, tile: int) -> np.ndarray:
    """bool[T, T] silhouette of a grid object kind: ball (disc), box (hollow square), key (ring and bit)."""
    u, v = unit_grid(tile)
    if kind == 0:  # ball
        return np.hypot(u - 0.5, v - 0.5) <= 0.36
    if kind == 1:  # box: a thick hollow square
        outer = _box(u, v, 0.12, 0.88, 0.12, 0.88)
        inner = _box(u, v, 0.34, 0.66, 0.34, 0.66)
        return outer & ~inner
    # key: a ring at the top, a shaft down the middle and a bit to the right at the bottom
    ring = (np.hypot(u - 0.5, v - 0.28) <= 0.24) & (np.hypot(u - 0.5, v - 0.28) >= 0.09)
    shaft = _box(u, v, 0.40, 0.60, 0.40, 0.92)
    bit = _box(u, v, 0.55, 0.85, 0.70, 0.84)
    return ring | shaft | bit


def heading_mask(heading: int, tile: int) -> np.ndarray:
    """bool[T, T] triangle pointing east (0), south (1), west (2) or north (3)."""
    u, v = unit_grid(tile)
    # east-pointing triangle, then rotate the coordinates
    for _ in range(heading):
        u, v = v, 1.0 - u  # rotate the frame by 90 degrees clockwise
    return (u >= 0.12) & (u <= 0.9) & (np.abs(v - 0.5) <= (0.9 - u) * 0.5 + 0.02)


def paint(mask: np.ndarray, rgb: tuple[int, int, int], background: tuple[int, int, int]) -> np.ndarray:
    """uint8[3, T, T]: ``rgb`` where ``mask``, ``background`` elsewhere."""
    fg = np.asarray(rgb, dtype=np.uint8)[:, None, None]
    bg = np.asarray(background, dtype=np.uint8)[:, None, None]
    return np.where(mask[None], fg, bg).astype(np.uint8)


def grid_atlas(tile: int, num_colours: int) -> np.ndarray:
    """uint8[S, 3, T, T] for the grid world, in this order: floor, wall, agent x 4 headings, then
    object ``(kind, colour)`` at ``6 + kind * num_colours + colour``."""
    u, v = unit_grid(tile)
    floor = paint(np.zeros((tile, tile), dtype=bool), FLOOR_RGB, FLOOR_RGB)
    # grid lines on the floor's top and left edge, so cells can be counted
    floor[:, 0, :] = 48
    floor[:, :, 0] = 48
    wall = paint((u > 1.0 / tile) & (v > 1.0 / tile), WALL_RGB, (70, 70, 76))
    sprites = [floor, wall]
    sprites += [paint(heading_mask(h, tile), AGENT_RGB, FLOOR_RGB) for h in range(4)]
    for kind in range(len(GRID_KINDS)):
        mask = kind_mask(kind, tile)
        for colour in GRID_COLOURS[:num_colours]:
            sprites.append(paint(mask, RGB[colour], FLOOR_RGB))
    atlas = np.stack(sprites)
    atlas[6:, :, 0, :] = 48  # objects sit on the floor: keep its grid lines
    atlas[6:, :, :, 0] = 48
    atlas[2:6, :, 0, :] = 48
    atlas[2:6, :, :, 0] = 48
    return atlas


# ---------------------------------------------------------------------------- scans (Diagnose)
#: Lesion shapes a scan can show, in condition-pair order.
SCAN_FINDINGS = ("nodule", "patch", "streaks", "cavity")
#: Grey level of each tissue type of the scan's anatomy map: body wall, lung field, mediastinum.
TISSUE_GREY = (120, 38, 185)
LESION_GREY = 225


def lesion_intensity(finding: int | None, size: int) -> np.ndarray:
    """float64[size, size] in [0, 1]: how much of the lesion shows at each pixel of its square.

    ``finding`` indexes :data:`SCAN_FINDINGS`; ``None`` is a hazy opacity that hides the shape (the
    same for every finding): a soft blob whose outline says nothing about what is under it."""
    u, v = unit_grid(size)
    d = np.hypot(u - 0.5, v - 0.5)
    if finding is None:
        return 0.55 * np.exp(-(d**2) / 0.06)
    if finding == 0:  # nodule: a solid round ball with a soft edge
        return np.clip((0.33 - d) / 0.05, 0.0, 1.0)
    if finding == 1:  # patch: a mottled, irregular cloud
        mottle = 0.5 + 0.5 * np.sin(19.0 * u + 2.0) * np.sin(17.0 * v + 1.0)
        return np.where(d < 0.44, (mottle > 0.45) * np.clip((0.44 - d) / 0.15, 0.0, 1.0), 0.0)
    if finding == 2:  # streaks: parallel diagonal lines
        lines = np.abs(((u + v) * 3.0) % 1.0 - 0.5) < 0.14
        return (lines & (d < 0.46)).astype(np.float64)
    # cavity: a thick ring with a dark centre
    return np.clip(np.minimum((d - 0.16) / 0.04, (0.40 - d) / 0.04), 0.0, 1.0)


def _noisy(grey: np.ndarray, generator: np.random.Generator, sigma: float = 11.0) -> np.ndarray:
    noisy = grey + generator.normal(0.0, sigma, size=grey.shape)
    return np.repeat(np.clip(noisy, 0, 255).astype(np.uint8)[None], 3, axis=0)


def scan_atlas(tile: int, num_findings: int, tissue_variants: int, lesion_variants: int, seed: int = 0) -> np.ndarray:
    """uint8[S, 3, T, T] for synthetic scans, in this order:

    * tissue ``t`` (of :data:`TISSUE_GREY`), noise variant ``n``: ``t * tissue_variants + n``;
    * the lesion at normal scale, a 2x2-tile square: finding ``f`` (``num_findings`` = the hazy
      opacity), quadrant ``q``, variant ``n``, from ``3 * tissue_variants``, index ``(f * 4 + q) * lesion_variants + n``;
    * the lesion zoomed in (the detailed scan), a 4x4-tile square, after those: ``(f * 16 + q) * lesion_variants + n``.

    Every sprite carries its own speckle noise (a fixed numpy generator: the atlas is a constant)."""
    generator = np.random.default_rng(seed)
    sprites = []
    for grey in TISSUE_GREY:
        for _ in range(tissue_variants):
            sprites.append(_noisy(np.full((tile, tile), float(grey)), generator))
    lung = float(TISSUE_GREY[1])
    for cells in (2, 4):
        for finding in [*range(num_findings), None] if cells == 2 else range(num_findings):
            lesion = lung + (LESION_GREY - lung) * lesion_intensity(finding, cells * tile)
            for q in range(cells * cells):
                r, c = divmod(q, cells)
                square = lesion[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile]
                for _ in range(lesion_variants):
                    sprites.append(_noisy(square, generator))
    return np.stack(sprites)
