"""Generation stage: SCAIL-2 sampling on the prepared files, one GPU slot at a time, the model kept warm.

Masks are read through the masks library, so hand edits (a replaced file or single replaced frames) are what
the model sees, and what the cache key hashes.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from pathlib import Path

from prefect import task

from scailflow.tasks.common import cache_key, content_hash, stage_key, stage_logger, stage_task_options

VERSION = "generate-1"
OUTPUT_NAME = "output.mp4"
GPU_SLOT = "scailflow-gpu-{index}"
_PIPELINES: dict[str, object] = {}
_LOAD_LOCK = threading.Lock()
LOADS = {"count": 0}  # model loads in this process: a warm worker loads once, then serves every generation


def warm_pipeline(model_cfg: dict):
    """The loaded pipeline for this model config, loaded once per process and kept (a warm worker)."""
    from scailflow.scail.loading import load_pipeline

    key = json.dumps(model_cfg, sort_keys=True)
    with _LOAD_LOCK:
        if key not in _PIPELINES:
            cfg = {k: v for k, v in model_cfg.items() if k != "oom_retry_offload"}  # a task policy, not a load option
            speed = {k: cfg.pop(k) for k in ("attention", "compile", "fp8", "step_cache", "vae_tiling") if k in cfg}
            speed = {("cache_threshold" if k == "step_cache" else k): v for k, v in speed.items() if v}
            _PIPELINES[key] = load_pipeline(cfg.pop("model"), **cfg, speed=speed or None)
            LOADS["count"] += 1
            stage_logger("scail").info("model loaded in %.1f s (kept warm for later runs in this process)",
                                       _PIPELINES[key].load_seconds)
        return _PIPELINES[key]


def release_pipelines() -> int:
    """Free every warm pipeline (and its GPU memory); returns how many were dropped."""
    import gc

    import torch

    with _LOAD_LOCK:
        n = len(_PIPELINES)
        _PIPELINES.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return n


def ensure_gpu_slots(gpus: int) -> None:
    """One global concurrency limit of 1 per GPU (created if missing), so generations never share a GPU.
    Only with a Prefect server (see `gpu_slot`)."""
    if not prefect_server_present():
        return
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for i in range(gpus):
            name = GPU_SLOT.format(index=i)
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)


def prefect_server_present() -> bool:
    """A real Prefect API (a server, or the test harness) rather than the temporary one of a server-less run."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


@contextlib.contextmanager
def gpu_slot(index: int, use_prefect: bool):
    """Hold GPU `index` for one generation.

    Always an OS file lock (released by the kernel if the process dies, so a killed worker never leaves the GPU
    taken); with a Prefect server also its global concurrency slot (visible in the UI, shared across machines),
    leased for 60 s at a time so the server's repossessor frees it soon after a crash. The temporary API of a
    server-less run keeps leases in memory and never repossesses them, so it is not used there.
    """
    home = Path(os.environ.get("SCAILFLOW_HOME", Path.home() / ".scailflow")) / "locks"
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / f"gpu-{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if use_prefect:
            from prefect.concurrency.sync import concurrency

            with concurrency(GPU_SLOT.format(index=index), occupy=1, lease_duration=60):
                yield
        else:
            yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _mask_hash(path: str) -> str:
    from scailflow.masks import mask_digest

    return mask_digest(path) if Path(path).is_file() else "missing"


def assemble_files(pose: dict, masks: dict, prompt: dict, ref: str, extra_refs: list[str], mode: str,
                   driving_mode: str) -> dict:
    """The prepared-folder files generation reads, from the three upstream stages' results."""
    # pose-driven animation: the mask is the skeleton's flat-colour render; otherwise the segmentation's
    driving_mask = pose["mask_render"] if driving_mode == "pose" and mode == "animation" else masks["driving_mask"]
    return {"ref": ref, "ref_mask": masks["ref_mask"], "rendered": pose["rendered"], "driving_mask": driving_mask,
            "prompt_file": prompt["prompt_file"], "extra_refs": list(extra_refs),
            "extra_ref_masks": list(masks["extra_ref_masks"])}


def _key(p: dict) -> str:
    f = assemble_files(p["pose"], p["masks"], p["prompt"], p["ref"], p["extra_refs"], p["mode"], p["driving_mode"])
    reads = [f["ref"], f["rendered"], f["prompt_file"], *f.get("extra_refs", [])]
    masks = [_mask_hash(f["ref_mask"]), _mask_hash(f["driving_mask"]),
             *[_mask_hash(m) for m in f.get("extra_ref_masks", [])]]
    model = {k: v for k, v in p["model_cfg"].items() if k not in ("scail_path", "lora_path")}
    # `rerun` is set when a worker must run although the inputs are unchanged (its outputs were deleted): a
    # worker runs its own copy of the task, so the flow's refresh_cache option does not reach it
    params = {"masks": masks, "sampling": p["sampling"], "mode": p["mode"], "model": model, "rerun": p.get("rerun")}
    weights = [p["model_cfg"].get("scail_path"), p["model_cfg"].get("lora_path")]
    return stage_key("generate", VERSION, p["out_dir"], reads, params, weights)


def outputs(out_dir: str) -> list[Path]:
    return [Path(out_dir) / OUTPUT_NAME]


@task(name="generate", cache_key_fn=cache_key(_key), **stage_task_options(retries=1))
def generate_task(pose: dict, masks: dict, prompt: dict, ref: str, extra_refs: list[str], out_dir: str, mode: str,
                  driving_mode: str, sampling: dict, model_cfg: dict, gpu: int = 0, rerun: str | None = None) -> dict:
    """Sample the video from the upstream stages' files; returns {"video": path, "record": path, "seed": int, ...}."""
    from scailflow.masks import read_mask_image, read_mask_video
    from scailflow.scail.generate import GenerateRequest, generate, read_conditioning
    from scailflow.scail.options import PRESETS, SamplingOptions

    log = stage_logger("scail")
    files = assemble_files(pose, masks, prompt, ref, extra_refs, mode, driving_mode)
    s = dict(sampling)
    opts = dict(PRESETS[s.pop("preset")])
    for k in ("steps", "shift", "guidance", "solver"):
        if s.get(k) is not None:
            opts[k] = s[k]
        s.pop(k, None)
    target_h, target_w, fps = s.pop("target_h"), s.pop("target_w"), s.pop("fps")
    options = SamplingOptions(**opts, **s)
    save = Path(out_dir) / OUTPUT_NAME
    req = GenerateRequest(
        image=Path(files["ref"]), mask_image=Path(files["ref_mask"]), pose=Path(files["rendered"]),
        mask_video=Path(files["driving_mask"]), prompt=Path(files["prompt_file"]).read_text(encoding="utf-8").strip(),
        save_file=save, replace=mode == "replacement",
        additional_ref_images=[Path(x) for x in files.get("extra_refs", [])],
        additional_ref_masks=[Path(x) for x in files.get("extra_ref_masks", [])],
        target_h=target_h, target_w=target_w, fps=fps)
    inputs = read_conditioning(req, read_mask_image=read_mask_image, read_mask_video=read_mask_video)
    with gpu_slot(gpu, prefect_server_present()):
        pipe = warm_pipeline(model_cfg)
        last = {"pct": -1}

        def progress(what: str, i: int, n: int) -> None:
            pct = int(100 * i / n)
            if pct // 25 != last["pct"] // 25 or i == n:
                log.info("%s: step %d/%d", what, i, n)
                last["pct"] = pct

        try:
            record = generate(pipe, req, options, progress, inputs=inputs)
        except Exception as e:  # noqa: BLE001 - only a GPU out-of-memory is handled here
            if not (is_oom(e) and model_cfg.get("oom_retry_offload") and model_cfg.get("offload") == "none"):
                raise
            log.warning("GPU out of memory; retrying once with block offload (oom_retry_offload is on)")
            release_pipelines()
            model_cfg = dict(model_cfg, offload="block")
            record = generate(warm_pipeline(model_cfg), req, options, progress, inputs=inputs)
        record["offload"] = model_cfg.get("offload")
    log.info("video %s: %d frames, seed %d, %.1f s", save, record["frames_out"], record["seed"], record["seconds"])
    return {"video": str(save), "record": str(save) + ".json", "seed": record["seed"], "files": files,
            "frames": record["frames_out"], "model": record["model"], "video_sha256": content_hash(save),
            "worker_pid": os.getpid(), "model_loads_in_worker": LOADS["count"], "offload": record["offload"]}
