"""Files in, video out: read the prepared inputs, sample, write the H.264 mp4 and its settings record atomically."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from scailflow.files import write_text_atomic
from scailflow.layout import OUTPUT
from scailflow.media import has_audio, open_video, write_video
from scailflow.scail.conditioning import target_size
from scailflow.scail.inputs import (  # noqa: F401 - re-exported: generate's inputs are read without torch
    Conditioning,
    GenerateRequest,
    official_output_name,
    read_conditioning,
    read_still,
)
from scailflow.scail.options import PRESET_LORAS, SamplingOptions
from scailflow.scail.pipeline import SCAIL2Pipeline
from scailflow.scail.resume import SegmentStore
from scailflow.uptime import process_seconds

log = logging.getLogger("scailflow.scail")

OUTPUT_NAME = OUTPUT  # in a flow's output folder (scailflow/layout.py)
OUTPUT_CRF = 10  # H.264 quality of the official writer (imageio quality 8 = x264 crf 10, yuv420p)


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
    t0, started_at = time.perf_counter(), process_seconds()
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
            # seconds into this process at each mark: what a command spent outside the stages (imports and CUDA
            # start before the load, model set-up between load and generation, exit after the record)
            "read_ahead": getattr(pipe, "read_ahead", None),
            "process_clock": {
                "load_start": getattr(pipe, "load_started_at", None),
                "generate_start": started_at,
                "record": process_seconds(),
            },
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
