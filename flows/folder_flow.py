"""The folder-to-video flow: pose, masks and prompt (in parallel), then generation. Tasks pass file paths only.

Generation is submitted only once its folder's preprocessing has completed: a folder whose masks failed gets no
generation task run at all (never one left `NotReady`), and generation never holds a worker thread while it waits.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from prefect import flow

from scailflow import console
from scailflow.errors import OutputError
from scailflow.files import atomic_path, make_dirs
from scailflow.flows.config import JobConfig, RunOptions, load_job
from scailflow.flows.folder import RawFolder, output_dir, scan_folder
from scailflow.flows.lock import folder_lock
from scailflow.flows.report import failed_summary, folder_summary, record_run
from scailflow.flows.stopping import flow_started
from scailflow.native import preload
from scailflow.options import STAGES
from scailflow.scail.options import ModelOptions, SamplingOptions
from scailflow.tasks.common import stage_logger
from scailflow.tasks.generate import generate_task
from scailflow.tasks.gpu import ensure_gpu_slots, read_weights_ahead
from scailflow.tasks.masks import masks_task
from scailflow.tasks.pose import pose_task
from scailflow.tasks.progress import folder_progress
from scailflow.tasks.prompt import api_key, prompt_task

PREPROCESSING = STAGES[:3]


class GenerationArgs(NamedTuple):
    """generate_task's parameters besides the three upstream results, by name."""

    ref: str  # the reference copied beside its mask
    extra_refs: list[str]
    out_dir: str
    mode: str
    driving_mode: str
    sampling: SamplingOptions
    model: ModelOptions
    gpu: int

    def kwargs(self) -> dict:
        return self._asdict()


@dataclass
class FolderRun:
    """One folder's submitted stages."""

    raw: RawFolder
    job: JobConfig
    out_dir: Path
    futures: dict
    generation: GenerationArgs | None = None
    run: RunOptions = field(default_factory=RunOptions)
    started: float = field(default_factory=time.perf_counter)
    summary: dict | None = None  # set by finish_folder, for a failed folder too
    error: str | None = None  # why generation was not submitted, if it was not


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
    """Scan and validate before any work (one clear InputError for a bad folder or job.yaml). Paths come back
    absolute: cached results hold paths, and a later run (or a worker) may start from another directory."""
    scan_folder(folder)  # messages name the folder as given
    raw = scan_folder(Path(folder).resolve(), check_media=False)
    job = load_job(raw.root, defaults, overrides)
    return raw, job, output_dir(raw, Path(out).resolve() if out else None)


def for_folder(task, stage: str, folder: str):
    """The task as this folder's: its runs are named `<stage> · <folder>` in the UI and on the console. (Not
    tagged: Prefect asks the server for a concurrency slot per tag of every task run, which made a cached batch of
    20 folders 5x slower.)"""
    return task.with_options(task_run_name=console.task_run_name(stage, folder))


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
    run: RunOptions | None = None,
) -> FolderRun:
    """Submit the folder's preprocessing (pose, masks, prompt, in parallel); `submit_generation` follows it."""
    started = time.perf_counter()
    run = run or RunOptions()
    preload(native_modules(job))  # before the stage threads start: see scailflow/native.py
    make_dirs(out_dir)
    console.name_folder(out_dir, raw.name)
    folder_progress(out_dir, raw.name)  # the folder's progress artifact, at 0% until its stages report
    ref = copy_reference(raw, out_dir)
    extra = [(str(p), kind) for p, kind in raw.extra_refs]
    out, name = str(out_dir), raw.name
    rerun = set(run.rerun)
    pose = for_folder(pose_task, "pose", name).submit(
        str(raw.driving),
        out,
        job.driving,
        job.pose,
        str(raw.ref),
        job.masks.max_persons,
        rerun="pose" in rerun,
        driving_fps=job.sampling.driving_fps,
    )
    masks = for_folder(masks_task, "masks", name).submit(
        str(raw.ref),
        str(raw.driving),
        out,
        job.mode,
        job.masks,
        extra,
        job.driving,
        rerun="masks" in rerun,
        driving_fps=job.sampling.driving_fps,
    )
    prompt = for_folder(prompt_task, "prompt", name).submit(
        str(raw.driving),
        str(raw.ref),
        out,
        job.mode,
        job.prompt_enhancer,
        str(raw.prompt_file) if raw.prompt_file else None,
        job.prompt,
        key_available,
        rerun="prompt" in rerun,
    )
    console.name_task_runs([f.task_run_id for f in (pose, masks, prompt)], raw.name)
    sampling = job.sampling.model_copy(update={"seed": -1}) if run.new_seed else job.sampling
    generation = GenerationArgs(
        ref=str(ref),
        extra_refs=[p for p, _ in extra],
        out_dir=out,
        mode=job.mode,
        driving_mode=job.driving,
        sampling=sampling,
        model=model,
        gpu=gpu,
    )
    return FolderRun(raw, job, out_dir, {"pose": pose, "masks": masks, "prompt": prompt}, generation, run, started)


def submit_generation(run: FolderRun, workers: bool = False) -> bool:
    """Once the folder's preprocessing has completed, submit its generation (on the flow's task runner, or with
    `workers` to the warm GPU workers as a background task). Returns False, and submits nothing, if a stage failed:
    a folder's generation never waits on a failed stage (it would stay NotReady in the UI)."""
    for name in PREPROCESSING:
        run.futures[name].wait()
    if not all(run.futures[name].state.is_completed() for name in PREPROCESSING):
        stage_logger("flow").info(
            "not run: an earlier stage of this folder failed",
            extra={"stage_label": console.label("generate", run.raw.name)},
        )
        return False
    force = "generate" in run.run.rerun or run.run.new_seed
    task = for_folder(generate_task, "generate", run.raw.name)
    if workers:  # the worker resolves nothing itself: hand it the results, not the futures
        done = {name: run.futures[name].state.result() for name in PREPROCESSING}
        run.futures["generate"] = task.delay(**done, **run.generation.kwargs(), rerun=force)
    else:  # done futures as parameters: the UI draws the dependencies
        upstream = {name: run.futures[name] for name in PREPROCESSING}
        run.futures["generate"] = task.submit(**upstream, **run.generation.kwargs(), rerun=force)
    console.name_task_runs([run.futures["generate"].task_run_id], run.raw.name)
    return True


def wait_for(future, tries: int = 100) -> None:
    """`future.wait()`. A task handed to the workers (`.delay`) may have a task run with no state yet for a moment
    after it was submitted, and Prefect's wait then raises at once instead of waiting (seen under load): ask again."""
    for attempt in range(tries):
        try:
            return future.wait()
        except RuntimeError as e:
            if "has no state" not in str(e) or attempt == tries - 1:
                raise
            time.sleep(0.1)


def finish_folder(run: FolderRun) -> dict:
    """Wait for the folder's stages; publish its take as output.mp4; write run.json, the run history and the UI
    artifacts, for a failed folder too (state, stage, reason). Raises the first stage error."""
    from scailflow.tasks.generate import publish_take

    for fut in run.futures.values():
        wait_for(fut)
    failed = [name for name in STAGES if name in run.futures and not run.futures[name].state.is_completed()]
    if failed or "generate" not in run.futures:
        run.summary = failed_summary(run, failed[0] if failed else "generate", run.error)
        try:
            record_run(run.summary, run.out_dir)
        except (OSError, OutputError) as e:  # e.g. the same full disk: the stage's own error is the one to tell
            stage_logger("flow").warning("could not record the failed run: %s", e)
        if failed:
            run.futures[failed[0]].state.result()  # raises the stage's own error
        raise RuntimeError(run.summary["error"])
    publish_take(run.futures["generate"].state.result())
    summary = run.summary = folder_summary(run)
    record_run(summary, run.out_dir)
    folder_progress(run.out_dir).complete(f"done in {summary['seconds']} s: {Path(summary['video']).resolve()}")
    stage_logger("flow").info(  # for the UI's log; the command prints its own summary
        "%s -> %s (%s)",
        run.raw.name,
        summary["video"],
        ", ".join(f"{k}: {v}" for k, v in summary["states"].items()),
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
    run: RunOptions | dict | None = None,
) -> dict:
    """One raw folder -> the animated video. Returns a summary: each stage's final state, outputs, seconds.

    A second run of the same folder waits for the first (or, with wait_if_busy=False, fails with FolderBusy).
    With `workers`, generation runs on a warm GPU worker (`scailflow worker`) instead of in this process.
    `run`: stages to force (`rerun`) and `new_seed` (a new take with a fresh random seed).
    """
    flow_started()
    console.adopt()
    raw, job, out_dir = prepare(folder, out, defaults, overrides)
    ensure_gpu_slots(gpu + 1)
    model_opts = ModelOptions.model_validate(model or {})
    with folder_lock(out_dir, wait=wait_if_busy):
        if not workers:  # the model's files come off the disk while pose and masks run
            read_weights_ahead(model_opts, [out_dir])
        folder_run = submit_folder(
            raw,
            job,
            out_dir,
            model_opts,
            gpu,
            api_key() is not None,
            RunOptions.model_validate(run or {}),
        )
        submit_generation(folder_run, workers=workers)
        return finish_folder(folder_run)
