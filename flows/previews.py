"""Pictures small enough to live inside a Prefect artifact (markdown with data URIs: the browser showing the UI
cannot open local files): an animated WebP of a video, a JPEG of a still."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from PIL import Image

MAX_BYTES = 300_000  # per picture: artifacts are rows in the Prefect database
MAX_FRAMES = 48
MAX_SIDE = 320


def jpeg_data_uri(rgb: np.ndarray, max_side: int | None = None, quality: int = 82) -> str:
    im = Image.fromarray(np.ascontiguousarray(rgb))
    if max_side:
        im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def animated_webp(
    frames: np.ndarray, fps: float, max_bytes: int = MAX_BYTES, max_side: int = MAX_SIDE, max_frames: int = MAX_FRAMES
) -> bytes:
    """An endlessly looping animated WebP of RGB uint8 frames [T, H, W, 3] at real speed, under `max_bytes`.

    Long videos keep every k-th frame (each shown k times as long); the picture shrinks until it fits."""
    step = max(1, math.ceil(len(frames) / max_frames))
    kept = frames[::step]
    duration = max(20, round(1000 * step / max(fps, 1e-3)))
    side, quality = max_side, 70
    data = b""
    for _ in range(8):
        scale = min(1.0, side / max(frames.shape[1:3]))
        size = (max(2, round(frames.shape[2] * scale)), max(2, round(frames.shape[1] * scale)))
        images = [Image.fromarray(np.ascontiguousarray(f)).resize(size, Image.Resampling.LANCZOS) for f in kept]
        buf = io.BytesIO()
        images[0].save(
            buf,
            format="WEBP",
            save_all=True,
            append_images=images[1:],
            duration=duration,
            loop=0,
            quality=quality,
            method=4,
        )
        data = buf.getvalue()
        if len(data) <= max_bytes:
            break
        side, quality = round(side * 0.8), max(40, quality - 10)
    return data


def webp_data_uri(frames: np.ndarray, fps: float, **kw) -> str:
    return "data:image/webp;base64," + base64.b64encode(animated_webp(frames, fps, **kw)).decode()
