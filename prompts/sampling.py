"""Evenly spaced frame sampling and JPEG encoding of the pictures sent to Gemini."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from scailflow.errors import InputError
from scailflow.media import open_video, probe_video, read_image

# Gemini scales pictures down itself; sending more pixels only costs upload time and tokens.
MAX_SIDE = 1024
JPEG_QUALITY = 90


def sample_frame_indices(n_total: int, n: int) -> list[int]:
    """Indices of `n` frames spread evenly over `n_total`: round(i*(N-1)/(n-1)), the middle frame for n=1.

    Asking for more frames than the video has returns every frame once (no duplicates).
    """
    if n_total < 1:
        raise InputError(f"cannot sample frames from a video with {n_total} frames")
    if n < 1:
        raise InputError(f"number of frames must be at least 1, got {n}")
    if n == 1:
        return [n_total // 2]
    if n >= n_total:
        return list(range(n_total))
    return [round(i * (n_total - 1) / (n - 1)) for i in range(n)]


def jpeg_bytes(rgb: np.ndarray, max_side: int = MAX_SIDE, quality: int = JPEG_QUALITY) -> bytes:
    """Encode RGB uint8 [H, W, 3] as JPEG, shrunk so the longer side is at most `max_side`."""
    im = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    scale = max_side / max(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def image_jpeg(path: str | os.PathLike) -> bytes:
    """The reference image as JPEG bytes (any format read_image accepts)."""
    return jpeg_bytes(read_image(path))


def _decode_at(path: Path, wanted: set[int]) -> tuple[dict[int, np.ndarray], int]:
    """Decode the video once (upright, BT.709: scailflow.decode), converting only the frames in `wanted`; also
    return how many frames decoded."""
    return open_video(path, driving_fps="source").frames_at(wanted)


def sample_video_frames(path: str | os.PathLike, n: int) -> tuple[list[int], list[np.ndarray]]:
    """The sampled frame indices of a video and those frames as RGB uint8 arrays, decoding it streamed.

    The frame count comes from demuxing (cheap); if fewer frames decode than were counted, the indices are
    recomputed over the decoded count and the video is decoded once more.
    """
    path = Path(path)
    n_total = probe_video(path).frames
    if n_total < 1:
        raise InputError(f"video {path} has no frames")
    indices = sample_frame_indices(n_total, n)
    picked, decoded = _decode_at(path, set(indices))
    if decoded == 0:
        raise InputError(f"video {path} has no frames")
    if decoded != n_total:
        indices = sample_frame_indices(decoded, n)
        picked, _ = _decode_at(path, set(indices))
    return indices, [picked[i] for i in indices]
