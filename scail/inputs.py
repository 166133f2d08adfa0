"""What `generate` reads, without torch: the request (the official generate.py's inputs as paths), the pixels one
sample is made from (`Conditioning`), and reading and checking them, so a bad file fails in a fraction of a second
before torch, diffusers and the model load (`scail/generate.py` and `scail/pipeline.py` re-export these names)."""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from scailflow.errors import InputError
from scailflow.media import StreamedFrames, open_video, read_image

log = logging.getLogger("scailflow.scail")


@dataclass
class GenerateRequest:
    """The official generate.py's inputs, as paths."""

    image: Path
    mask_image: Path
    pose: Path  # rendered_v2.mp4: the driving video (end-to-end) or the skeleton render (pose-driven)
    mask_video: Path  # rendered_mask_v2.mp4 (animation) or replace_mask.mp4 (replacement)
    prompt: str
    save_file: Path
    replace: bool = False
    additional_ref_images: list[Path] = field(default_factory=list)
    additional_ref_masks: list[Path] = field(default_factory=list)
    max_frames: int | None = None
    audio_from: Path | None = None  # whose sound the output carries (default: `pose`, the driving video end-to-end)
    driving_fps: float | str | None = None  # sampling.driving_fps: the rate `pose` and `mask_video` are taken at
    segments_dir: Path | None = None  # where finished segments are kept, so a run that died resumes (scail/resume.py)
    segments_key: str = ""  # what they were made from (the take's hash): kept segments of anything else are dropped


def read_still(path) -> np.ndarray:
    """A reference image (or mask) as generation sees it: a transparent PNG's stored colours, alpha dropped, as the
    official `Image.open(p).convert("RGB")` (the other stages see it composited on white)."""
    return read_image(path, alpha="drop")


def official_output_name(prompt: str, target_w: int, target_h: int, ring_size: int = 1, now=None) -> str:
    """The official generate.py's file name when --save_file is absent:
    SCAIL2_<target_w>*<target_h>_<ring_size>_<prompt, spaces and / as _, 50 characters>_<YYYYmmdd_HHMMSS>.mp4
    (the target as typed, before any swap; "x" instead of "*" on Windows). Other whitespace becomes _ too."""
    sep = "x" if sys.platform == "win32" else "*"
    text = re.sub(r"\s", "_", prompt).replace("/", "_")[:50]
    stamp = (now or datetime.now()).strftime("%Y%m%d_%H%M%S")
    return f"SCAIL2_{target_w}{sep}{target_h}_{ring_size}_{text}_{stamp}.mp4"


def _first(frames, n: int):
    return frames.limit(n) if isinstance(frames, StreamedFrames) else frames[:n]


@dataclass
class Conditioning:
    """What one sample is generated from, as pixels (RGB uint8)."""

    ref_image: np.ndarray  # [H, W, 3]
    ref_mask: np.ndarray  # [H, W, 3]
    driving: np.ndarray | StreamedFrames  # [T, H, W, 3] (streamed: decoded a segment at a time)
    driving_mask: np.ndarray | StreamedFrames  # [T, H, W, 3]
    prompt: str
    replace: bool = False
    additional_refs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def check_inputs(cond: Conditioning) -> None:
    """Shapes and counts the model needs; one clear InputError otherwise."""
    if cond.driving.ndim != 4 or cond.driving.shape[0] < 1:
        raise InputError("the driving video has no frames")
    if cond.driving_mask.shape[0] != cond.driving.shape[0]:
        raise InputError(
            f"the driving mask has {cond.driving_mask.shape[0]} frames, the driving video {cond.driving.shape[0]}"
        )
    if cond.ref_mask.shape[:2] != cond.ref_image.shape[:2]:
        raise InputError(
            f"the reference mask is {cond.ref_mask.shape[1]}x{cond.ref_mask.shape[0]}, the reference "
            f"image {cond.ref_image.shape[1]}x{cond.ref_image.shape[0]}: they must be the same size"
        )
    if cond.driving_mask.shape[1:3] != cond.driving.shape[1:3]:
        raise InputError(
            f"the driving mask is {cond.driving_mask.shape[2]}x{cond.driving_mask.shape[1]}, the "
            f"driving video {cond.driving.shape[2]}x{cond.driving.shape[1]}: they must be the same size"
        )
    for i, (img, msk) in enumerate(cond.additional_refs):
        if img.shape[:2] != msk.shape[:2]:
            raise InputError(f"additional reference {i + 1} and its mask differ in size")


def read_conditioning(
    req: GenerateRequest, read_mask_image=read_still, read_mask_video=None
) -> tuple[Conditioning, float]:
    """Read and check every input file (masks through the given readers); returns the conditioning and the fps.

    The driving video and its mask are taken at `req.driving_fps` (by timestamp, see scailflow.decode) and streamed:
    the conditioning holds them as `StreamedFrames`, decoded at source size a segment at a time when the pipeline
    asks for that segment's frames (the resize to the target stays the official one, per segment), so memory does
    not grow with the clip. Their first frames are decoded here, so a file that cannot be decoded fails now.
    `read_mask_video(path)` returns the mask video's frames (an array or `StreamedFrames`)."""
    if read_mask_video is None:

        def read_mask_video(p):
            return StreamedFrames(open_video(p, driving_fps=req.driving_fps))

    if len(req.additional_ref_images) != len(req.additional_ref_masks):
        raise InputError(
            f"{len(req.additional_ref_images)} additional reference images but "
            f"{len(req.additional_ref_masks)} additional reference masks: they are paired by position"
        )
    ref, ref_mask = read_still(req.image), read_mask_image(req.mask_image)
    reader = open_video(req.pose, req.driving_fps, max_frames=req.max_frames)
    (log.info if reader.converts else log.debug)("decode %s", reader.describe())
    driving, fps = StreamedFrames(reader), reader.fps
    driving_mask = read_mask_video(req.mask_video)
    if req.max_frames is not None:
        driving_mask = _first(driving_mask, req.max_frames)
    n = min(len(driving), len(driving_mask))
    if len(driving) != len(driving_mask):
        log.warning("driving video has %d frames, its mask %d: using the first %d", len(driving), len(driving_mask), n)
    driving, driving_mask = _first(driving, n), _first(driving_mask, n)
    driving[0], driving_mask[0]  # noqa: B018 - decodes (and so checks) both files before any model loads
    extra = [(read_still(i), read_mask_image(m)) for i, m in zip(req.additional_ref_images, req.additional_ref_masks)]
    cond = Conditioning(ref, ref_mask, driving, driving_mask, req.prompt, req.replace, extra)
    check_inputs(cond)
    return cond, fps
