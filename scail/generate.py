"""Files in, video out: read the prepared inputs, sample, write the H.264 mp4 and its settings record atomically."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from scailflow.errors import InputError
from scailflow.files import write_text_atomic
from scailflow.layout import OUTPUT
from scailflow.media import StreamedFrames, has_audio, open_video, read_image, write_video
from scailflow.scail.conditioning import target_size
from scailflow.scail.options import PRESET_LORAS, SamplingOptions
from scailflow.scail.pipeline import Conditioning, SCAIL2Pipeline, check_inputs
from scailflow.scail.resume import SegmentStore

log = logging.getLogger("scailflow.scail")

OUTPUT_NAME = OUTPUT  # in a flow's output folder (scailflow/layout.py)
OUTPUT_CRF = 10  # H.264 quality of the official writer (imageio quality 8 = x264 crf 10, yuv420p)


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


def generate(
    pipe: SCAIL2Pipeline,
    req: GenerateRequest,
    opts: SamplingOptions,
    progress=None,
    inputs: tuple[Conditioning, float] | None = None,
) -> dict:
    """Generate one video; writes `save_file` and `save_file` + '.json' (seed, prompt, settings). Returns the record.

    `inputs` is `read_conditioning(req)`'s result when the caller read (and so checked) the files already.
    """
    t0 = time.perf_counter()
    opts = opts.resolved()
    t_read = time.perf_counter()
    cond, driving_fps = inputs or read_conditioning(req)
    read_seconds = time.perf_counter() - t_read
    height, width = target_size(opts.target_h, opts.target_w, cond.ref_image.shape[:2])
    if (height, width) != (opts.target_h, opts.target_w):
        log.info(
            "reference is %s: target swapped to %dx%d (WxH)",
            "portrait" if cond.ref_image.shape[0] > cond.ref_image.shape[1] else "landscape",
            width,
            height,
        )
    if len(cond.driving) < 5:  # 4k+1 frames: anything under 5 gives a single frame
        log.warning("the driving video has %d frame(s): one output frame", len(cond.driving))
    wanted = PRESET_LORAS.get(opts.preset, ())
    if wanted and not pipe.loras:
        log.warning(
            "the %s preset is made for these LoRAs: %s (--lora_path, in that order); without them %d steps at "
            "CFG %g give a poor video",
            opts.preset,
            ", ".join(f"{name} at {alpha:g}" for name, alpha in wanted),
            opts.steps,
            opts.guidance,
        )
    store = SegmentStore(req.segments_dir, req.segments_key) if req.segments_dir is not None else None
    frames, record = pipe(cond, height, width, opts, progress, store=store)
    if record["frames_out"] < record["frames_in"]:
        log.info(
            "used %d of the driving video's %d frames (4k+1 per segment; --keep_tail keeps the rest)",
            record["frames_out"],
            record["frames_in"],
        )
    fps = float(opts.fps or driving_fps)
    sound = (req.audio_from or req.pose) if opts.audio else None
    if sound is not None and abs(fps - driving_fps) > 0.01 and has_audio(sound):
        log.warning(
            "the output plays at %g fps, the driving video at %g fps: its sound is trimmed to the output's length "
            "but will not follow the motion (--no-audio leaves it out)",
            fps,
            driving_fps,
        )
    t_write = time.perf_counter()
    write_video(req.save_file, frames, fps, crf=OUTPUT_CRF, audio_from=sound)
    taken = open_video(req.pose, req.driving_fps).record() | {"frames_taken": record["frames_in"]}
    log.info(
        "driving video: %d frames taken at %.4g fps (%s; source %.4g fps, %d frames)",
        taken["frames_taken"],
        taken["driving_fps"],
        taken["taken"],
        taken["source_fps"],
        taken["source_frames"],
    )
    timings = record.setdefault("timings", {})
    timings["write"] = round(time.perf_counter() - t_write, 3)  # H.264 encode + the sound mux
    timings["load"] = round(
        getattr(pipe, "load_seconds", 0.0), 3
    )  # this process's model load (loaded once per process)
    timings["read"] = round(read_seconds, 3)  # decoding the input files (0 when the caller read them)
    record.update(
        {
            "driving": taken,
            "model": pipe.label,
            "prompt": req.prompt,
            "fps": fps,
            "audio_from": str(sound) if sound is not None and has_audio(req.save_file) else None,
            "replace": req.replace,
            "inputs": {k: str(getattr(req, k)) for k in ("image", "mask_image", "pose", "mask_video")},
            "additional_refs": [str(p) for p in req.additional_ref_images],
            "sampling": opts.model_dump() | {"seed": record["seed"]},
            "speedups": pipe.speedups,
            "loras": pipe.loras,
            "seconds": round(time.perf_counter() - t0, 3),
            "output": str(req.save_file),
        }
    )
    write_text_atomic(Path(str(req.save_file) + ".json"), json.dumps(record, indent=2))
    if store is not None:  # the take is complete: its kept segments are not needed any more
        store.clear()
    log.info(
        "wrote %s (%d frames at %g fps, %s, seed %d)",
        req.save_file,
        len(frames),
        fps,
        "with the driving video's sound" if record["audio_from"] else "no sound",
        record["seed"],
    )
    return record
