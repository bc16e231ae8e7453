"""Frames for ``render()`` and replay videos: the observation image enlarged, with a text panel beside it."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import cv2
import numpy as np

PANEL_WIDTH = 320
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def enlarge(image_chw: np.ndarray, scale: int) -> np.ndarray:
    """``uint8[3, H, W]`` to an HWC image ``scale`` times larger (nearest neighbour, crisp pixels)."""
    hwc = np.ascontiguousarray(np.asarray(image_chw).transpose(1, 2, 0))
    return cv2.resize(hwc, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def outline(frame: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int] = (255, 255, 0), width: int = 3) -> None:
    """Draw a rectangle ``(x0, y0, x1, y1)`` on an HWC frame in place."""
    x0, y0, x1, y1 = box
    cv2.rectangle(frame, (x0, y0), (x1 - 1, y1 - 1), colour, width)


#: a panel line: its text, or its text and colour (RGB)
PanelLine = str | tuple[str, tuple[int, int, int]]
_LINE_TOP, _LINE_STEP, _LINE_GAP, _BOTTOM = 22, 18, 4, 8
_TEXT_COLOUR = (235, 235, 235)


def _wrapped(lines: Sequence[PanelLine], panel_width: int) -> list[tuple[list[str], tuple[int, int, int]]]:
    chars = max(10, (panel_width - 16) // 9)
    out = []
    for line in lines:
        text, colour = (line, _TEXT_COLOUR) if isinstance(line, str) else line
        out.append((textwrap.wrap(text, chars) or [""], colour))
    return out


def panel_height(lines: Sequence[PanelLine], panel_width: int = PANEL_WIDTH) -> int:
    """The height (even) a panel needs to show every line of ``lines`` wrapped as :func:`compose` wraps them."""
    parts = sum(len(wrapped) for wrapped, _ in _wrapped(lines, panel_width))
    last = _LINE_TOP + (parts - 1) * _LINE_STEP + (len(lines) - 1) * _LINE_GAP if lines else 0
    height = last + _BOTTOM
    return height + height % 2


def compose(picture: np.ndarray, lines: Sequence[PanelLine], panel_width: int = PANEL_WIDTH) -> np.ndarray:
    """An HWC uint8 frame: ``picture`` on the left, ``lines`` of text wrapped in a dark panel on the right (a line
    may come with its colour); what does not fit the picture's height is cut (:func:`panel_height` says how tall
    the picture must be for all of it).

    Height and width are even (video encoders need it)."""
    height = picture.shape[0]
    panel = np.full((height, panel_width, 3), 24, dtype=np.uint8)
    y = _LINE_TOP
    for wrapped, colour in _wrapped(lines, panel_width):
        for part in wrapped:
            if y > height - 6:
                break
            cv2.putText(panel, part, (8, y), _FONT, 0.45, colour, 1, cv2.LINE_AA)
            y += _LINE_STEP
        y += _LINE_GAP
    frame = np.concatenate([picture, panel], axis=1)
    h, w = frame.shape[:2]
    return np.ascontiguousarray(frame[: h - h % 2, : w - w % 2])
