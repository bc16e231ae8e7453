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


def compose(picture: np.ndarray, lines: Sequence[str], panel_width: int = PANEL_WIDTH) -> np.ndarray:
    """An HWC uint8 frame: ``picture`` on the left, ``lines`` of text wrapped in a dark panel on the right.

    Height and width are even (video encoders need it)."""
    height = picture.shape[0]
    panel = np.full((height, panel_width, 3), 24, dtype=np.uint8)
    y = 22
    chars = max(10, (panel_width - 16) // 9)
    for line in lines:
        for part in textwrap.wrap(line, chars) or [""]:
            if y > height - 6:
                break
            cv2.putText(panel, part, (8, y), _FONT, 0.45, (235, 235, 235), 1, cv2.LINE_AA)
            y += 18
        y += 4
    frame = np.concatenate([picture, panel], axis=1)
    h, w = frame.shape[:2]
    return np.ascontiguousarray(frame[: h - h % 2, : w - w % 2])
