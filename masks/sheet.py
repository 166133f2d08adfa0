"""Contact sheet (and optional overlay video) of masks over their frames, for checking and editing masks."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from scailflow.errors import InputError
from scailflow.layout import DRIVING_MASK_NAMES, REF_MASK
from scailflow.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, open_video, read_image, write_image, write_video

from .edits import read_mask_image, stream_mask_video

log = logging.getLogger("scailflow.masks")

PREVIEW_NAME = "masks_preview.png"
_MASK_NAMES = (REF_MASK, "ref_mask.jpg", *DRIVING_MASK_NAMES.values())


def _mask_dir(folder: Path) -> Path:
    if any((folder / n).is_file() for n in _MASK_NAMES):
        return folder
    found = sorted(
        (p.parent for n in _MASK_NAMES for p in folder.rglob(n)),
        key=lambda d: (len(d.relative_to(folder).parts), str(d)),
    )
    if not found:
        raise InputError(
            f"no masks found in {folder} (expected {REF_MASK} and {' or '.join(DRIVING_MASK_NAMES.values())})"
        )
    return found[0]


def _first(paths: list[Path]) -> Path | None:
    return paths[0] if paths else None


def _sources(folder: Path, mask_dir: Path) -> tuple[Path | None, Path | None]:
    """The reference image and driving video the masks were made from (best guess, None if absent)."""
    dirs = [mask_dir, folder, mask_dir.parent]

    def candidates(suffixes, skip) -> list[Path]:
        out = []
        for d in dict.fromkeys(dirs):
            for p in sorted(d.iterdir()) if d.is_dir() else []:
                name = p.name.lower()
                if (
                    p.is_file()
                    and p.suffix.lower() in suffixes
                    and not name.startswith(".")
                    and "mask" not in name
                    and "preview" not in name
                    and not skip(name)
                ):
                    out.append(p)
        return out

    images = candidates(IMAGE_SUFFIXES, lambda n: False)
    ref = _first([p for p in images if p.stem.lower().startswith("ref")]) or _first(images)
    # not the skeleton render (rendered_*) nor the generated video (output*): the raw driving video
    videos = candidates(VIDEO_SUFFIXES, lambda n: n.startswith(("rendered", "output")))
    video = _first(videos) or _first([p for p in [mask_dir / "rendered_v2.mp4"] if p.is_file()])
    return ref, video


def _overlay(frame: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """Palette colours blended at 50%, white left as is (background visible), black darkened (hidden)."""
    if frame is None:
        return mask
    if frame.shape[:2] != mask.shape[:2]:
        frame = cv2.resize(frame, (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_AREA)
    f = frame.astype(np.float32)
    m = mask.astype(np.float32)
    white = (mask == 255).all(-1)
    black = (mask == 0).all(-1)
    out = 0.5 * f + 0.5 * m
    out[white] = f[white]
    out[black] = 0.35 * f[black]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _cell(img: np.ndarray | None, height: int, width: int, label: str, sharp: bool = False) -> np.ndarray:
    """A labelled tile; `sharp` enlarges without blending (a mask's colours stay pure)."""
    cell = np.full((height, width, 3), 64, np.uint8)
    if img is not None:
        grow = cv2.INTER_NEAREST if sharp else cv2.INTER_LINEAR
        cell = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if img.shape[0] >= height else grow)
    scale = 0.5 if height >= 128 else 0.4
    cv2.rectangle(cell, (0, 0), (min(width - 1, 8 + int(17 * scale * len(label))), int(36 * scale)), (0, 0, 0), -1)
    cv2.putText(cell, label, (3, int(26 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return cell


def tile_size(height: int, width: int, tile: int) -> tuple[int, int]:
    """(height, width) of a tile whose shorter side is `tile` pixels, keeping the frame's aspect."""
    if height >= width:
        return max(1, round(tile * height / width)), tile
    return tile, max(1, round(tile * width / height))


def overlay_frames(
    video: str | os.PathLike, mask_video: str | os.PathLike, step: int = 1, max_side: int | None = None
) -> tuple[np.ndarray, float]:
    """Every `step`-th driving frame with its mask blended over it (as on the sheet), at most `max_side` pixels on
    the longer side, and the video's fps."""
    # streamed side by side: one frame of each at a time, only the kept ones (resized) are held
    masks = stream_mask_video(Path(mask_video))
    reader = open_video(video)
    fps = reader.fps
    h, w = masks.shape[1:3]
    scale = min(1.0, max_side / max(h, w)) if max_side else 1.0
    size = (max(2, round(w * scale)), max(2, round(h * scale)))
    out = []
    for t, (frame, mask) in enumerate(zip(reader, masks)):
        if t % max(1, step):
            continue
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST) if scale < 1 else mask
        out.append(_overlay(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), mask))
    return np.stack(out), fps


def preview(
    folder_or_out_dir: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    *,
    video_out: str | os.PathLike | None = None,
    frames: int = 6,
    tile: int = 256,
) -> Path:
    """Write a contact sheet PNG of the masks over their frames; return its path.

    Wide, one column per picture: the reference, then `frames` evenly spaced driving frames; rows: picture, mask,
    overlay. Tiles are `tile` pixels on their shorter side (256: a mask edge is visible at a glance). The masks are
    found in the folder or the nearest subfolder holding them, edits and frame overrides included. With `video_out`,
    also writes a side-by-side video (frame | overlay) of every driving frame.
    """
    folder = Path(folder_or_out_dir)
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    mask_dir = _mask_dir(folder)
    out_path = Path(out_path) if out_path is not None else mask_dir / PREVIEW_NAME
    ref_image_path, video_path = _sources(folder, mask_dir)

    ref_mask_path = next((mask_dir / n for n in (REF_MASK, "ref_mask.jpg") if (mask_dir / n).is_file()), None)
    drv_mask_path = next((mask_dir / n for n in DRIVING_MASK_NAMES.values() if (mask_dir / n).is_file()), None)
    rows: list[tuple[str, np.ndarray | None, np.ndarray]] = []
    if ref_mask_path is not None:
        ref = read_image(ref_image_path) if ref_image_path else None
        rows.append(("reference", ref, read_mask_image(ref_mask_path)))
    # streamed: only the picked frames are kept (a long 1080p clip decoded whole would take gigabytes)
    drv_masks = stream_mask_video(drv_mask_path) if drv_mask_path is not None else None
    fps = None
    if drv_masks is not None:
        n = len(drv_masks)
        picks = sorted({round(i * (n - 1) / max(1, frames - 1)) for i in range(min(frames, n))})
        picked: dict[int, np.ndarray] = {}
        if video_path is not None:
            reader = open_video(video_path)
            fps = reader.fps
            picked, count = reader.frames_at(picks)
            if count != n:
                log.warning("preview: %s has %d frames, the mask %d", video_path.name, count, n)
        for t in picks:
            rows.append((f"frame {t}", picked.get(t), drv_masks[t]))

    if not rows:
        raise InputError(f"no masks found in {mask_dir}")
    # every tile is as tall as the driving frames' tiles; the reference keeps its own aspect at that height
    height = tile_size(*rows[-1][2].shape[:2], tile)[0]
    columns = []
    for label, picture, mask in rows:
        width = max(16, round(height * mask.shape[1] / mask.shape[0]))
        columns.append(
            np.concatenate(
                [
                    _cell(picture, height, width, label),
                    _cell(mask, height, width, "mask", sharp=True),
                    _cell(_overlay(picture, mask), height, width, "overlay"),
                ],
                axis=0,
            )
        )
    gap = np.full((3 * height, 4, 3), 32, np.uint8)
    sheet = np.concatenate([c for col in columns for c in (col, gap)][:-1], axis=1)
    write_image(out_path, sheet)

    if video_out is not None and drv_masks is not None:

        def pairs():
            driving = iter(open_video(video_path)) if video_path is not None else iter(())
            for t in range(len(drv_masks)):  # forwards, a frame of each at a time
                mask, frame = drv_masks[t], next(driving, None)
                left = mask if frame is None else cv2.resize(frame, (mask.shape[1], mask.shape[0]))
                both = np.concatenate([left, _overlay(frame, mask)], axis=1)
                yield np.pad(both, ((0, both.shape[0] % 2), (0, both.shape[1] % 2), (0, 0)))

        write_video(video_out, pairs(), fps or 16.0)
    log.debug("masks preview: %s", out_path)
    return out_path
