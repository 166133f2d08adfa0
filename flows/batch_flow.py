"""Batches: every folder a pipelines.yaml names, preprocessing overlapping generation, one generation per GPU."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from scailflow import console
from scailflow.errors import InputError
from scailflow.flows.config import PipelinesFile, load_pipelines
from scailflow.flows.folder import find_folders
from scailflow.flows.folder_flow import finish_folder, prepare, send_to_worker, submit_folder
from scailflow.flows.lock import folder_lock
from scailflow.flows.stopping import flow_started
from scailflow.options import merge
from scailflow.scail.options import ModelOptions
from scailflow.tasks.common import stage_logger
from scailflow.tasks.gpu import ensure_gpu_slots
from scailflow.tasks.prompt import api_key

PREPROCESS_WORKERS = 4


def batch_folders(cfg: PipelinesFile, only: str | None = None) -> list[tuple[str, Path, str | None, dict]]:
    """(pipeline name, folder, out dir, options) for every folder of the selected pipelines, each real folder once
    (a folder listed twice, or under two spellings, runs once). An empty selection is an InputError."""
    items, seen, outs = [], {}, {}
    log = stage_logger("flow")
    if only and not any(entry.name == only for entry in cfg.pipelines):
        raise InputError(f"no pipeline named {only!r} (pipelines: {', '.join(e.name for e in cfg.pipelines)})")
    for entry in cfg.pipelines:
        if only and entry.name != only:
            continue
        folders = [Path(f) for f in entry.folders] or find_folders(entry.root)
        if not folders:
            log.warning("pipeline %s: no folder with a ref image under %s", entry.name, entry.root)
        for folder in folders:
            real = folder.resolve()
            if real in seen:
                log.warning("%s is %s again (pipeline %s): run once", folder, seen[real], entry.name)
                continue
            seen[real] = folder
            out = str(Path(entry.out) / folder.name) if entry.out else None
            if out and (twin := outs.get(Path(out).resolve())) is not None:
                raise InputError(f"{twin} and {folder} would both write to {out}: give them different names")
            if out:
                outs[Path(out).resolve()] = folder
            items.append((entry.name, folder, out, merge(cfg.defaults, entry.options)))
    if not items:
        where = ", ".join(e.root or "its folders" for e in cfg.pipelines if not only or e.name == only)
        raise InputError(f"nothing to run: no folder with a ref image and a driving video in {where}")
    return items


@flow(
    name="scailflow-batch", task_runner=ThreadPoolTaskRunner(max_workers=PREPROCESS_WORKERS), validate_parameters=False
)
def batch_flow(
    pipelines_file: str, pipeline: str | None = None, model: dict | None = None, workers: bool | None = None
) -> dict:
    """Run every folder of pipelines.yaml (or one named pipeline). A bad folder, or one another run is busy
    with, is reported and skipped; the others go on. Returns {folder: summary or {"error": message}}."""
    console.adopt()  # a scheduled run in its own process (`scailflow serve`): the same quiet console
    flow_started()
    log = stage_logger("flow")
    cfg = load_pipelines(pipelines_file)
    # the file's `model:` overridden by the command line's model flags (`model`: only the flags given)
    model_opts = ModelOptions.model_validate(merge(cfg.model.model_dump(exclude_unset=True), model or {}))
    workers = cfg.workers if workers is None else workers
    ensure_gpu_slots(cfg.gpus)
    key_available = api_key() is not None
    runs, results = [], {}
    started = time.perf_counter()
    with contextlib.ExitStack() as locks:
        for n, (_name, folder, out, options) in enumerate(batch_folders(cfg, pipeline)):
            try:
                raw, job, out_dir = prepare(str(folder), out, options, None)
                locks.enter_context(folder_lock(out_dir, wait=False))
            except InputError as e:
                log.error("skipped %s: %s", folder, e)
                results[str(folder)] = {"error": str(e)}
                continue
            runs.append(submit_folder(raw, job, out_dir, model_opts, n % cfg.gpus, key_available, workers))
        if workers:  # queue each generation for the warm workers as soon as its folder's preprocessing is done
            for run in runs:
                try:
                    send_to_worker(run)
                except Exception:  # noqa: BLE001 - reported by finish_folder below
                    pass
        for run in runs:
            try:
                results[str(run.raw.root)] = finish_folder(run, started)
            except Exception as e:  # noqa: BLE001 - one folder's failure is reported; the batch goes on
                log.error("failed %s: %s", run.raw.root, e, extra={"console": False})  # the stage said it
                results[str(run.raw.root)] = {"error": f"{e.__class__.__name__}: {e}"}
    done = sum("error" not in r for r in results.values())
    log.info(  # the command prints its own summary
        "batch: %d of %d folders done in %.1f s",
        done,
        len(results),
        time.perf_counter() - started,
        extra={"console": "summary"},
    )
    return results


def build_deployments(pipelines_file: str):
    """One Prefect deployment per scheduled pipeline (cron or interval), running `batch_flow` on it."""
    cfg = load_pipelines(pipelines_file)
    deployments = []
    for entry in cfg.pipelines:
        if entry.schedule is None:
            continue
        sched = entry.schedule
        kwargs = {"cron": sched.cron} if sched.cron else {"interval": sched.interval_seconds}
        deployments.append(
            batch_flow.to_deployment(
                name=entry.name,
                parameters={"pipelines_file": str(Path(pipelines_file).resolve()), "pipeline": entry.name},
                tags=["scailflow"],
                **kwargs,
            )
        )
    if not deployments:
        raise InputError(f'{pipelines_file}: no pipeline has a schedule (add `schedule: {{cron: "0 2 * * *"}}`)')
    return deployments
