"""Generation stage: SCAIL-2 sampling on the prepared files (the GPU slot, warm model and OOM handling are in
tasks/gpu.py). Masks are read through the masks library, so hand edits (a replaced file or single replaced frames)
are what the model sees, and what the cache key hashes."""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from pydantic import BaseModel, ConfigDict

from scailflow.layout import OUTPUT, TAKES_DIR, driving_mask_source, segments_root
from scailflow.scail.options import ModelOptions, SamplingOptions
from scailflow.tasks.common import (
    cache_key,
    content_hash,
    stage_key,
    stage_logger,
    stage_task_options,
    true_key,
    write_manifest,
)
from scailflow.tasks.gpu import LOADS, generate_on_gpu

if TYPE_CHECKING:
    from scailflow.masks.stage import MaskResult
    from scailflow.pose.stage import PoseResult
    from scailflow.prompts.stage import PromptStageResult

VERSION = "generate-3"  # 3: official preprocessing (torchvision resize, int() sizes, uint8 driving, truncated output)
PREVIEW = {"max_bytes": 60_000, "max_side": 192, "max_frames": 24}  # the video so far, in the progress artifact


def outputs(out_dir: str) -> list[Path]:
    """The latest take, published under the official name."""
    return [Path(out_dir) / OUTPUT]


def _mask_hash(path: str) -> str:
    from scailflow.masks import mask_digest

    return mask_digest(path) if Path(path).is_file() else "missing"


class PreparedFiles(BaseModel):
    """The prepared-folder files generation reads (paths as strings: they go into run.json as they are)."""

    model_config = ConfigDict(frozen=True)

    ref: str  # the fitted reference when the masks stage made one, else the folder's
    ref_mask: str
    rendered: str
    audio: str  # the raw driving video (its sound, in pose mode too), else the rendered one
    driving_mask: str  # scailflow/layout.py `driving_mask_source` says whose
    prompt_file: str
    extra_refs: list[str] = []
    extra_ref_masks: list[str] = []


def upstream(pose, masks, prompt) -> tuple[PoseResult, MaskResult, PromptStageResult]:
    """The three upstream results, typed (a result cached by an older scailflow comes back as a dict)."""
    from scailflow.masks.stage import MaskResult
    from scailflow.pose.stage import PoseResult
    from scailflow.prompts.stage import PromptStageResult

    return PoseResult.model_validate(pose), MaskResult.model_validate(masks), PromptStageResult.model_validate(prompt)


def assemble_files(
    pose: PoseResult,
    masks: MaskResult,
    prompt: PromptStageResult,
    ref: str,
    extra_refs: list[str],
    mode: str,
    driving_mode: str,
) -> PreparedFiles:
    """The prepared-folder files generation reads, from the three upstream stages' results."""
    pose, masks, prompt = upstream(pose, masks, prompt)
    from_pose = driving_mask_source(mode, driving_mode) == "pose"
    return PreparedFiles(
        ref=str(masks.ref_image or ref),
        ref_mask=str(masks.ref_mask),
        rendered=str(pose.rendered),
        audio=str(pose.source or pose.rendered),
        driving_mask=str(pose.mask_render if from_pose else masks.driving_mask),
        prompt_file=str(prompt.prompt_file),
        extra_refs=[str(p) for p in extra_refs],
        extra_ref_masks=[str(p) for p in masks.extra_ref_masks],
    )


def _key_doc(p: dict) -> tuple[list, dict, list]:
    """What generation reads (files, mask digests, settings, weights), for its keys."""
    f = assemble_files(p["pose"], p["masks"], p["prompt"], p["ref"], p["extra_refs"], p["mode"], p["driving_mode"])
    reads = [f.ref, f.rendered, f.prompt_file, *f.extra_refs, p["model"].scail_config_path]
    if p["sampling"].audio and f.audio != f.rendered:
        reads.append(f.audio)
    masks = [_mask_hash(f.ref_mask), _mask_hash(f.driving_mask), *[_mask_hash(m) for m in f.extra_ref_masks]]
    model: ModelOptions = p["model"]
    params = {
        "masks": masks,
        "sampling": p["sampling"].key_doc(),
        "mode": p["mode"],
        "model": model.model_dump(
            mode="json", exclude={"scail_path", "lora_path", "scail_config_path", "oom_retry_offload"}
        ),
    }
    return reads, params, [model.scail_path, *model.lora_path]


def base_key(p: dict) -> str:
    reads, params, weights = _key_doc(p)
    return stage_key("generate", VERSION, p["out_dir"], reads, params, weights)


def take_name(p: dict, seed: int) -> str:
    """A take's file name: readable settings, a short hash of everything it was made from, and its seed."""
    reads, params, weights = _key_doc(p)
    sampling: SamplingOptions = p["sampling"]
    params["sampling"] = sampling.key_doc(exclude={"seed"})
    digest = stage_key("take", VERSION, p["out_dir"], reads, params, weights).split("-", 1)[1][:8]
    return f"{sampling.preset}-{sampling.target_w}x{sampling.target_h}-{digest}-seed{seed}.mp4"


def kept_segments(out_dir: str, take: Path) -> Path:
    """Where the take's finished segments are kept while it is generated; any other take's kept segments (other
    settings, another seed: stale) are removed, so only one unfinished take per folder holds disk space."""
    import shutil

    root = segments_root(out_dir)
    for other in root.glob("*") if root.is_dir() else ():
        if other.name != take.stem:
            shutil.rmtree(other, ignore_errors=True)
    return root / take.stem


def unfinished_seed(p: dict) -> int | None:
    """The seed of an unfinished take with these settings (seed -1 drew it), so a re-run resumes that take."""
    from scailflow.scail.resume import SegmentStore

    stem = Path(take_name(p, 0)).stem.removesuffix("-seed0") + "-seed"
    root = segments_root(p["out_dir"])
    for d in sorted(root.glob(stem + "*"), key=lambda d: d.stat().st_mtime, reverse=True) if root.is_dir() else ():
        if d.name.removeprefix(stem).isdigit() and SegmentStore(d).kept():
            return int(d.name.removeprefix(stem))
    return None


def _preview(out_dir: str, store_dir: Path, fps: float, progress):
    """`progress`, plus a picture of the video so far in the folder's progress artifact after each segment."""
    from scailflow.progress import bar_name
    from scailflow.tasks.progress import folder_progress

    def fn(what: str, done: int, total: int) -> None:
        progress(what, done, total)
        if bar_name(what) == "segment" and 0 < done < total:
            try:
                from scailflow.flows.previews import webp_data_uri
                from scailflow.scail.resume import SegmentStore

                kept = SegmentStore(store_dir).frames()
                frames = kept.sample(PREVIEW["max_frames"])  # spread over the whole: plays as long as the video
                uri = webp_data_uri(frames, fps * len(frames) / max(1, len(kept)), **PREVIEW)
                folder_progress(out_dir).preview(f"![the video so far: {done} of {total} segments]({uri})")
            except Exception as e:  # noqa: BLE001 - a preview must never fail a run
                stage_logger("scail").debug("no preview of the video so far: %s", e)

    return fn


def _key(p: dict) -> str:
    # one manifest per base key: every take stays valid while its file does (takes are kept side by side).
    # A worker runs its own copy of the task, so forcing a run travels as the `rerun` parameter, not refresh_cache
    base = base_key(p)
    return true_key(p["out_dir"], base, base, bool(p.get("rerun")))


@task(name="generate", cache_key_fn=cache_key(_key), **stage_task_options(retries=1))
def generate_task(
    pose: PoseResult,
    masks: MaskResult,
    prompt: PromptStageResult,
    ref: str,
    extra_refs: list[str],
    out_dir: str,
    mode: str,
    driving_mode: str,
    sampling: SamplingOptions,
    model: ModelOptions,
    gpu: int = 0,
    rerun: bool = False,
) -> dict:
    """Sample a take from the upstream stages' files: `takes/<settings>-seed<N>.mp4` (+ .json); returns its paths.
    Seed -1 draws a fresh seed (as the official code: 0..2**63-1 from Python's generator), recorded in the take's
    name and record. `rerun`: run even if cached
    (with seed -1, a new seed)."""
    from scailflow.masks import read_mask_image, stream_mask_video
    from scailflow.prompts.stage import read_prompt_file
    from scailflow.scail.generate import GenerateRequest, read_conditioning
    from scailflow.scail.pipeline import random_seed
    from scailflow.tasks.progress import stage

    t0 = time.perf_counter()
    log = stage_logger("scail")
    files = assemble_files(pose, masks, prompt, ref, extra_refs, mode, driving_mode)
    params = dict(pose=pose, masks=masks, prompt=prompt, ref=ref, extra_refs=extra_refs, out_dir=out_dir, mode=mode)
    params.update(driving_mode=driving_mode, sampling=sampling, model=model)
    seed = sampling.seed
    if seed < 0:  # a fresh draw, unless an unfinished take of these settings waits to be resumed (not on --rerun)
        kept = None if rerun else unfinished_seed(params)
        seed = kept if kept is not None else random_seed()
    take = Path(out_dir) / TAKES_DIR / take_name(params, seed)
    store_dir = kept_segments(out_dir, take)
    req = GenerateRequest(
        image=Path(files.ref),
        mask_image=Path(files.ref_mask),
        pose=Path(files.rendered),
        mask_video=Path(files.driving_mask),
        prompt=read_prompt_file(Path(files.prompt_file)),
        save_file=take,
        replace=mode == "replacement",
        additional_ref_images=[Path(x) for x in files.extra_refs],
        additional_ref_masks=[Path(x) for x in files.extra_ref_masks],
        audio_from=Path(files.audio),
        driving_fps=sampling.driving_fps,
        segments_dir=store_dir,
        segments_key=take.stem,
    )
    with stage("generate", out_dir) as progress:
        read_masks = partial(stream_mask_video, driving_fps=sampling.driving_fps)
        inputs = read_conditioning(req, read_mask_image=read_mask_image, read_mask_video=read_masks)
        fps = float(sampling.fps or inputs[1])
        progress = _preview(out_dir, store_dir, fps, progress)
        record = generate_on_gpu(req, sampling.model_copy(update={"seed": seed}), model, inputs, gpu, progress, log)
    record_file = Path(str(take) + ".json")
    write_manifest(out_dir, None, [take, record_file])
    log.info(
        "take %s: %d frames, seed %d, %.1f s generating (+%.1f s waiting for GPU %d)",
        take.name,
        record["frames_out"],
        record["seed"],
        record["seconds"],
        record["gpu_wait_s"],
        gpu,
    )
    return {
        "video": str(outputs(out_dir)[0]),
        "take": str(take),
        "record": str(record_file),
        "seed": record["seed"],
        "files": files.model_dump(),
        "frames": record["frames_out"],
        "model": record["model"],
        "video_sha256": content_hash(take),
        "worker_pid": os.getpid(),
        "model_loads_in_worker": LOADS["count"],
        "offload": record["offload"],
        "seconds": round(time.perf_counter() - t0, 3),  # the stage's own time, waiting for the GPU included
        "gpu_wait_s": record["gpu_wait_s"],
    }


def publish_take(result: dict) -> Path:
    """Make the take the folder's `output.mp4` (+ `output.mp4.json`), atomically: a hard link where the file system
    allows (no copy of the video), else a copy. Cheap when it is already the published one."""
    import shutil

    from scailflow.files import atomic_path

    take, out = Path(result["take"]), Path(result["video"])
    for src, dst in ((take, out), (Path(str(take) + ".json"), Path(str(out) + ".json"))):
        if dst.is_file() and os.path.samestat(src.stat(), dst.stat()):
            continue
        if dst.is_file() and content_hash(dst) == content_hash(src):
            continue
        with atomic_path(dst) as tmp:
            tmp.unlink()
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
    return out
