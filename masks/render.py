"""Colouring label maps with the palette and writing masks losslessly (PNG, lossless RGB H.264)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from scailflow.media import load_image, write_image, write_video

from .palette import check_count, colour, is_pure, snap_to_palette

log = logging.getLogger("scailflow.masks")

RGB = tuple[int, int, int]


def colour_lut(colours: Sequence[RGB], background: RGB) -> np.ndarray:
    """Lookup table [256, 3]: label 0 -> background, label k + 1 -> colours[k], anything else -> background."""
    check_count(len(colours))
    lut = np.tile(np.asarray(background, np.uint8), (256, 1))
    for k, c in enumerate(colours):
        lut[k + 1] = c
    return lut


def colourise(labels: np.ndarray, colours: Sequence[RGB], background: RGB) -> np.ndarray:
    """Label map [..., H, W] -> RGB uint8 [..., H, W, 3] with person k in colours[k] on `background`."""
    return colour_lut(colours, background)[labels]


def palette_colours(n: int) -> list[RGB]:
    """The first `n` palette colours (TooManyPersonsError beyond six)."""
    check_count(n)
    return [colour(k) for k in range(n)]


def _checked(rgb: np.ndarray, what: str) -> np.ndarray:
    if is_pure(rgb):
        return rgb
    snapped, n = snap_to_palette(rgb)
    log.warning("%s: %d pixels were not pure mask colours; snapped to the palette", what, n)
    return snapped


def write_mask_image(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write a mask image as PNG (atomic), snapping any impure pixel to the palette first."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"mask images are written as PNG (lossless), not {path.suffix}")
    return write_image(path, _checked(np.asarray(rgb, np.uint8), path.name))


def write_mask_video(path: str | os.PathLike, frames: np.ndarray | Sequence[np.ndarray], fps: float) -> Path:
    """Write mask frames [T, H, W, 3] as lossless RGB H.264 (atomic), snapping impure pixels first."""
    path = Path(path)

    def pure() -> Iterator[np.ndarray]:
        for t, f in enumerate(frames):
            yield _checked(np.asarray(f, np.uint8), f"{path.name} frame {t}")

    return write_video(path, pure(), fps, lossless=True)


def write_label_video(
    path: str | os.PathLike, labels: np.ndarray, colours: Sequence[RGB], background: RGB, fps: float
) -> Path:
    """Colour a label video [T, H, W] frame by frame and write it losslessly."""
    lut = colour_lut(colours, background)
    return write_video(Path(path), (lut[frame] for frame in labels), fps, lossless=True)


def valid_area(image_path: str | os.PathLike, rgb: np.ndarray) -> np.ndarray:
    """Where an image holds picture content: not fully transparent, and not inside uniform black or white
    letterbox bars along its edges (rows/columns of one colour within 8 levels at the border)."""
    h, w = rgb.shape[:2]
    valid = np.ones((h, w), bool)
    im = load_image(image_path)  # upright, as read_image gave `rgb`
    if "A" in im.getbands() or (im.mode == "P" and "transparency" in im.info):
        alpha = np.asarray(im.convert("RGBA"))[..., 3]
        if alpha.shape == (h, w):
            valid &= alpha > 0
    grey = rgb.astype(np.int16)

    def bar(line: np.ndarray) -> bool:
        return bool((line.max(axis=0) - line.min(axis=0)).max() <= 8 and (line.max() <= 16 or line.min() >= 239))

    top = 0
    while top < h - 1 and bar(grey[top]):
        top += 1
    bottom = h
    while bottom > top + 1 and bar(grey[bottom - 1]):
        bottom -= 1
    left = 0
    while left < w - 1 and bar(grey[top:bottom, left]):
        left += 1
    right = w
    while right > left + 1 and bar(grey[top:bottom, right - 1]):
        right -= 1
    if (bottom - top) * (right - left) < 0.5 * h * w:
        return valid  # mostly one flat colour: a plain backdrop, not letterboxing
    bars = np.ones((h, w), bool)
    bars[top:bottom, left:right] = False
    return valid & ~bars
