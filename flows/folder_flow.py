"""The folder-to-video flow: pose, masks and prompt (in parallel), then generation. Tasks pass file paths only."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from scailflow import console
from scailflow.files import atomic_path, make_dirs, write_text_atomic
from scailflow.flows.artifacts import publish_artifacts, stage_seconds
from scailflow.flows.config import JobConfig, load_job
from scailflow.flows.folder import RawFolder, output_dir, scan_folder
from scailflow.flows.lock import folder_lock
from scailflow.flows.stopping import flow_started
from scailflow.native import preload
from scailflow.scail.options import ModelOptions
from scailflow.tasks import generate as generate_stage
from scailflow.tasks import masks as masks_stage
from scailflow.tasks import pose as pose_stage
from scailflow.tasks import prompt as prompt_stage
from scailflow.tasks.common import fresh, stage_logger
from scailflow.tasks.generate import generate_task
from scailflow.tasks.gpu import ensure_gpu_slots
from scailflow.tasks.masks import masks_task
from scailflow.tasks.pose import pose_task
from scailflow.tasks.progress import folder_progress
from scailflow.tasks.prompt import api_key, prompt_task

STAGES = ("pose", "masks", "prompt", "generate")


@dataclass
class FolderRun:
    """One folder's submitted stages."""

    raw: RawFolder
    job: JobConfig
    out_dir: Path
    futures: dict
    gen_args: tuple = ()


def copy_reference(raw: RawFolder, out_dir: Path) -> Path:
    """The reference beside its mask (the official folder layout), copied only when it changed."""
    dst = out_dir / f"ref{raw.ref.suffix.lower()}"
    if not dst.is_file() or dst.read_bytes() != raw.ref.read_bytes():
        with atomic_path(dst) as tmp:
            shutil.copyfile(raw.ref, tmp)
    return dst


def prepare(
    folder: str, out: str | None, defaults: dict | None, overrides: dict | None
) -> tuple[RawFolder, JobConfig, Path]:
    """Scan and validate before any work (one clear InputError for a bad folder or job.yaml)."""
    raw = scan_folder(folder)
    job = load_job(raw.root, defaults, overrides)
    return raw, job, output_dir(raw, out)


def native_modules(job: JobConfig) -> list[str]:
    """The heavy native libraries this job's stages import (mediapipe: the default masks and their SAM prompts)."""
    names = ["mediapipe", "mediapipe.python.solutions.selfie_segmentation"]
    if job.driving == "pose":
        names += ["mediapipe.python.solutions.holistic", "onnxruntime"]
    if job.masks.backend == "sam2" or (job.masks.backend == "auto" and job.masks.sam2_checkpoint):
        names.append("sam2.build_sam")
    return names


def submit_folder(
    raw: RawFolder,
    job: JobConfig,
    out_dir: Path,
    model: ModelOptions,
    gpu: int,
    key_available: bool,
    workers: bool = False,
) -> FolderRun:
    """Submit the four stages of one folder; generation waits for the other three (futures as parameters).

    With `workers`, generation is not submitted here: `send_to_worker` hands it to a warm GPU worker once the
    preprocessing is done."""
    preload(native_modules(job))  # before the stage threads start: see scailflow/native.py
    make_dirs(out_dir)
    console.name_folder(out_dir, raw.name)
    folder_progress(out_dir, raw.name)  # the folder's progress artifact, at 0% until its stages report
    ref = copy_reference(raw, out_dir)
    extra = [(str(p), kind) for p, kind in raw.extra_refs]
    out = str(out_dir)

    def named(task, outputs):  # `pose · clip` in the UI's task list, and on the console in a batch
        return fresh(task, outputs).with_options(task_run_name=console.task_run_name(task.name, raw.name))

    pose = named(pose_task, pose_stage.outputs(out, job.driving)).submit(
        str(raw.driving), out, job.driving, job.pose, str(raw.ref), job.masks.max_persons
    )
    masks = named(masks_task, masks_stage.outputs(out, job.mode, extra, job.driving)).submit(
        str(raw.ref), str(raw.driving), out, job.mode, job.masks, extra, job.driving
    )
    prompt = named(prompt_task, prompt_stage.outputs(out)).submit(
        str(raw.driving),
        str(raw.ref),
        out,
        job.mode,
        job.prompt_enhancer,
        str(raw.prompt_file) if raw.prompt_file else None,
        job.prompt,
        key_available,
    )
    futures = {"pose": pose, "masks": masks, "prompt": prompt}
    gen_args = (str(ref), [p for p, _ in extra], out, job.mode, job.driving, job.sampling, model, gpu)
    if not workers:
        futures["generate"] = named(generate_task, generate_stage.outputs(out)).submit(pose, masks, prompt, *gen_args)
    console.name_task_runs([f.task_run_id for f in futures.values()], raw.name)
    return FolderRun(raw, job, out_dir, futures, gen_args)


def send_to_worker(run: FolderRun) -> None:
    """Wait for the folder's preprocessing, then queue its generation for the warm workers (background task)."""
    done = {}
    for name in ("pose", "masks", "prompt"):
        run.futures[name].wait()
        done[name] = run.futures[name].state.result()
    missing = not all(p.is_file() for p in generate_stage.outputs(run.gen_args[2]))
    rerun = uuid.uuid4().hex if missing else None
    run.futures["generate"] = generate_task.delay(
        done["pose"], done["masks"], done["prompt"], *run.gen_args, rerun=rerun
    )


def finish_folder(run: FolderRun, started: float) -> dict:
    """Wait for a folder's stages; write run.json and the UI artifacts. Raises the first stage error."""
    states = {}
    for name, fut in run.futures.items():
        fut.wait()
        states[name] = fut.state.name
    for name in STAGES:  # the first real failure, not generation's "upstream failed"
        if not run.futures[name].state.is_completed():
            run.futures[name].state.result()
    gen = run.futures["generate"].state.result()
    masks = run.futures["masks"].state.result()
    summary = {
        "folder": str(run.raw.root),
        "driving": str(run.raw.driving),
        "out_dir": str(run.out_dir),
        "states": states,
        "stage_seconds": stage_seconds(run.futures),
        "files": gen["files"],
        "video": gen["video"],
        "record": gen["record"],
        "seed": gen["seed"],
        "frames": gen["frames"],
        "model": gen["model"],
        "prompt_source": run.futures["prompt"].state.result()["source"],
        "persons": masks.get("persons"),
        "generated_by_pid": gen.get("worker_pid"),
        "model_loads_in_that_process": gen.get("model_loads_in_worker"),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_text_atomic(run.out_dir / "run.json", json.dumps(summary, indent=2))
    publish_artifacts(summary)
    folder_progress(run.out_dir).complete(f"done in {summary['seconds']} s: {Path(gen['video']).resolve()}")
    stage_logger("flow").info(  # for the UI's log; the command prints its own summary
        "%s -> %s (%s)",
        run.raw.name,
        gen["video"],
        ", ".join(f"{k}: {v}" for k, v in states.items()),
        extra={"console": "summary"},
    )
    return summary


@flow(name="scailflow-folder", flow_run_name="{folder_name}", validate_parameters=False)
def folder_flow(
    folder: str,
    folder_name: str = "",
    out: str | None = None,
    defaults: dict | None = None,
    overrides: dict | None = None,
    model: ModelOptions | dict | None = None,
    gpu: int = 0,
    wait_if_busy: bool = True,
    workers: bool = False,
) -> dict:
    """One raw folder -> the animated video. Returns a summary: each stage's final state, outputs, seconds.

    A second run of the same folder waits for the first (or, with wait_if_busy=False, fails with FolderBusy).
    With `workers`, generation runs on a warm GPU worker (`scailflow worker`) instead of in this process.
    """
    flow_started()
    started = time.perf_counter()
    console.adopt()
    raw, job, out_dir = prepare(folder, out, defaults, overrides)
    ensure_gpu_slots(gpu + 1)
    with folder_lock(out_dir, wait=wait_if_busy):
        run = submit_folder(
            raw, job, out_dir, ModelOptions.model_validate(model or {}), gpu, api_key() is not None, workers
        )
        if workers:
            send_to_worker(run)
        return finish_folder(run, started)
