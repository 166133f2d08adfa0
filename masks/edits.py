"""Reading masks back, including a person's edits, and what their content depends on.

A user may overwrite any mask file (PNG, JPEG or a re-encoded video) or replace single frames of a mask video by
dropping images into the override folder beside it: `rendered_mask_v2_frames/12.png` (or `00012.png`) replaces
frame 12 (0-based) of `rendered_mask_v2.mp4`. Readers snap everything back onto the palette, so lossy edits
still give the model pure colours. `mask_sources` / `mask_digest` let the flow key its cache on that content.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np

from scailflow.errors import InputError
from scailflow.files import file_sha256
from scailflow.media import IMAGE_SUFFIXES, StreamedFrames, open_video, read_image, read_video

from .palette import snap_to_palette

log = logging.getLogger("scailflow.masks")


def override_dir(video_path: str | os.PathLike) -> Path:
    """Folder whose images replace single frames of a mask video: `<stem>_frames` beside it."""
    p = Path(video_path)
    return p.with_name(f"{p.stem}_frames")


def frame_overrides(video_path: str | os.PathLike) -> dict[int, Path]:
    """{frame index: image} from the override folder (files named by 0-based frame number)."""
    folder = override_dir(video_path)
    out: dict[int, Path] = {}
    if not folder.is_dir():
        return out
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() in IMAGE_SUFFIXES and re.fullmatch(r"\d+", f.stem) and not f.name.startswith("."):
            index = int(f.stem)
            if index in out:
                raise InputError(f"two override images for frame {index} in {folder}: {out[index].name}, {f.name}")
            out[index] = f
    return out


def _snap(rgb: np.ndarray, what: str, snap: bool) -> np.ndarray:
    if not snap:
        return rgb
    snapped, n = snap_to_palette(rgb)
    if n:
        log.warning("%s: snapped %d off-palette pixels to black/white/palette colours", what, n)
    return snapped


def read_mask_image(path: str | os.PathLike, *, snap: bool = True) -> np.ndarray:
    """Read a mask image as RGB uint8 [H, W, 3], snapped to the palette (logging how many pixels changed)."""
    return _snap(read_image(path), str(path), snap)


def read_mask_video(path: str | os.PathLike, *, snap: bool = True, driving_fps=None) -> np.ndarray:
    """Read a mask video as RGB uint8 [T, H, W, 3] with frame overrides applied, snapped to the palette.
    `driving_fps`: the rate its driving video is taken at (sampling.driving_fps)."""
    path = Path(path)
    frames, _ = read_video(path, driving_fps=driving_fps)
    overrides = frame_overrides(path)
    if overrides:
        frames = frames.copy()
        for index, image_path in overrides.items():
            if index >= len(frames):
                raise InputError(
                    f"override {image_path} is for frame {index} but {path.name} has "
                    f"{len(frames)} frames (numbered from 0)"
                )
            image = read_image(image_path)
            if image.shape != frames[index].shape:
                raise InputError(
                    f"override {image_path} is {image.shape[1]}x{image.shape[0]}, the mask video "
                    f"{frames.shape[2]}x{frames.shape[1]}"
                )
            frames[index] = image
        log.info("%s: %d frames replaced from %s", path.name, len(overrides), override_dir(path))
    return _snap(frames, str(path), snap)


def stream_mask_video(path: str | os.PathLike, *, snap: bool = True, driving_fps=None) -> StreamedFrames:
    """`read_mask_video` streamed: the frames are decoded when asked for (a window at a time, see
    `scailflow.decode.StreamedFrames`), with the frame overrides applied and snapped to the palette as they come.
    The overrides are checked now (frame number, size), so a bad edit fails before anything runs."""
    path = Path(path)
    reader = open_video(path, driving_fps=driving_fps)
    overrides = {}
    for index, image_path in frame_overrides(path).items():
        if index >= reader.frames:
            raise InputError(
                f"override {image_path} is for frame {index} but {path.name} has {reader.frames} frames (numbered from 0)"
            )
        image = read_image(image_path)
        if image.shape != (reader.height, reader.width, 3):
            raise InputError(
                f"override {image_path} is {image.shape[1]}x{image.shape[0]}, the mask video "
                f"{reader.width}x{reader.height}"
            )
        overrides[index] = image
    if overrides:
        log.info("%s: %d frames replaced from %s", path.name, len(overrides), override_dir(path))

    def edited(indices: np.ndarray, frames: np.ndarray) -> np.ndarray:
        for k, index in enumerate(indices.tolist()):
            if index in overrides:
                frames[k] = overrides[index]
        first, last = int(indices.min()), int(indices.max())
        return _snap(frames, f"{path} (frames {first}-{last})", snap)

    return StreamedFrames(reader, transform=edited)


def mask_sources(path: str | os.PathLike) -> list[Path]:
    """The files a mask's content comes from: the mask itself plus, for a video, its frame overrides."""
    path = Path(path)
    return [path] + [f for _, f in sorted(frame_overrides(path).items())]


def mask_digest(path: str | os.PathLike) -> str:
    """sha256 over a mask's content and its frame overrides: it changes whenever an edit would."""
    h = hashlib.sha256()
    for i, f in enumerate(mask_sources(path)):
        h.update(f"{i}:{f.name if i else ''}:{file_sha256(f)}\n".encode())
    return h.hexdigest()
