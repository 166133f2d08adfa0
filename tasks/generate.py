"""Generation stage: SCAIL-2 sampling on the prepared files (the GPU slot, warm model and OOM handling are in
tasks/gpu.py). Masks are read through the masks library, so hand edits (a replaced file or single replaced frames)
are what the model sees, and what the cache key hashes."""

from __future__ import annotations

import os
from pathlib import Path

from prefect import task

from scailflow.scail.options import ModelOptions, SamplingOptions
from scailflow.tasks.common import cache_key, content_hash, stage_key, stage_logger, stage_task_options
from scailflow.tasks.gpu import LOADS, generate_on_gpu

VERSION = "generate-3"  # 3: official preprocessing (torchvision resize, int() sizes, uint8 driving, truncated output)


def outputs(out_dir: str) -> list[Path]:
    from scailflow.scail.generate import OUTPUT_NAME

    return [Path(out_dir) / OUTPUT_NAME]


def _mask_hash(path: str) -> str:
    from scailflow.masks import mask_digest

    return mask_digest(path) if Path(path).is_file() else "missing"


def assemble_files(
    pose: dict, masks: dict, prompt: dict, ref: str, extra_refs: list[str], mode: str, driving_mode: str
) -> dict:
    """The prepared-folder files generation reads, from the three upstream stages' results."""
    # pose-driven animation: the mask is the skeleton's flat-colour render; otherwise the segmentation's
    driving_mask = pose["mask_render"] if driving_mode == "pose" and mode == "animation" else masks["driving_mask"]
    return {
        "ref": masks.get("ref_image") or ref,  # the fitted reference when the masks stage made one
        "ref_mask": masks["ref_mask"],
        "rendered": pose["rendered"],
        "audio": pose.get("source") or pose["rendered"],  # the raw driving video's sound, in pose mode too
        "driving_mask": driving_mask,
        "prompt_file": prompt["prompt_file"],
        "extra_refs": list(extra_refs),
        "extra_ref_masks": list(masks["extra_ref_masks"]),
    }


def _key(p: dict) -> str:
    f = assemble_files(p["pose"], p["masks"], p["prompt"], p["ref"], p["extra_refs"], p["mode"], p["driving_mode"])
    reads = [f["ref"], f["rendered"], f["prompt_file"], *f["extra_refs"], p["model"].scail_config_path]
    if p["sampling"].audio and f["audio"] != f["rendered"]:
        reads.append(f["audio"])
    masks = [_mask_hash(f["ref_mask"]), _mask_hash(f["driving_mask"]), *[_mask_hash(m) for m in f["extra_ref_masks"]]]
    model: ModelOptions = p["model"]
    # `rerun` is set when a worker must run although the inputs are unchanged (its outputs were deleted): a
    # worker runs its own copy of the task, so the flow's refresh_cache option does not reach it
    params = {
        "masks": masks,
        "sampling": p["sampling"],
        "mode": p["mode"],
        "rerun": p.get("rerun"),
        "model": model.model_dump(mode="json", exclude={"scail_path", "lora_path", "scail_config_path"}),
    }
    return stage_key("generate", VERSION, p["out_dir"], reads, params, [model.scail_path, *model.lora_path])


@task(name="generate", cache_key_fn=cache_key(_key), **stage_task_options(retries=1))
def generate_task(
    pose: dict,
    masks: dict,
    prompt: dict,
    ref: str,
    extra_refs: list[str],
    out_dir: str,
    mode: str,
    driving_mode: str,
    sampling: SamplingOptions,
    model: ModelOptions,
    gpu: int = 0,
    rerun: str | None = None,
) -> dict:
    """Sample the video from the upstream stages' files; returns {"video": path, "record": path, "seed": int, ...}."""
    from scailflow.masks import read_mask_image, read_mask_video
    from scailflow.prompts.stage import read_prompt_file
    from scailflow.scail.generate import GenerateRequest, read_conditioning
    from scailflow.tasks.progress import stage

    log = stage_logger("scail")
    files = assemble_files(pose, masks, prompt, ref, extra_refs, mode, driving_mode)
    save = outputs(out_dir)[0]
    req = GenerateRequest(
        image=Path(files["ref"]),
        mask_image=Path(files["ref_mask"]),
        pose=Path(files["rendered"]),
        mask_video=Path(files["driving_mask"]),
        prompt=read_prompt_file(Path(files["prompt_file"])),
        save_file=save,
        replace=mode == "replacement",
        additional_ref_images=[Path(x) for x in files["extra_refs"]],
        additional_ref_masks=[Path(x) for x in files["extra_ref_masks"]],
        audio_from=Path(files["audio"]),
    )
    with stage("generate", out_dir) as progress:
        inputs = read_conditioning(req, read_mask_image=read_mask_image, read_mask_video=read_mask_video)
        record = generate_on_gpu(req, sampling, model, inputs, gpu, progress, log)
    return {
        "video": str(save),
        "record": str(save) + ".json",
        "seed": record["seed"],
        "files": files,
        "frames": record["frames_out"],
        "model": record["model"],
        "video_sha256": content_hash(save),
        "worker_pid": os.getpid(),
        "model_loads_in_worker": LOADS["count"],
        "offload": record["offload"],
    }
