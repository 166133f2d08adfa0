"""Batches: every folder a pipelines.yaml names, preprocessing overlapping generation, one generation per GPU."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from prefect import flow
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from scailflow import console
from scailflow.errors import InputError
from scailflow.flows.artifacts import publish_batch_summary
from scailflow.flows.config import PipelinesFile, load_pipelines
from scailflow.flows.folder import find_folders
from scailflow.flows.folder_flow import finish_folder, prepare, submit_folder, submit_generation
from scailflow.flows.lock import FolderBusy, folder_lock
from scailflow.flows.stopping import flow_started
from scailflow.options import merge
from scailflow.scail.options import ModelOptions
from scailflow.tasks.common import stage_logger
from scailflow.tasks.gpu import ensure_gpu_slots, read_weights_ahead
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


def batch_run_name() -> str:
    """`batch-<pipeline>` (or `batch-<file>` for every pipeline of the file)."""
    from prefect.runtime import flow_run

    params = flow_run.parameters or {}
    return f"batch-{params.get('pipeline') or Path(params.get('pipelines_file', 'pipelines')).stem}"


@flow(
    name="scailflow-batch",
    flow_run_name=batch_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=PREPROCESS_WORKERS),
    validate_parameters=False,
)
def batch_flow(
    pipelines_file: str, pipeline: str | None = None, model: dict | None = None, workers: bool | None = None
):
    """Run every folder of pipelines.yaml (or one named pipeline). A bad folder, or one another run is busy
    with, is reported and skipped; the others go on. Returns {folder: summary or {"error": message}}; the run ends
    Failed (with the same results) when a folder failed, Completed otherwise."""
    console.adopt()  # a scheduled run in its own process (`scailflow serve`): the same quiet console
    flow_started()
    log = stage_logger("flow")
    cfg = load_pipelines(pipelines_file)
    # the file's `model:` overridden by the command line's model flags (`model`: only the flags given)
    model_opts = ModelOptions.model_validate(merge(cfg.model.model_dump(exclude_unset=True), model or {}))
    workers = cfg.workers if workers is None else workers
    ensure_gpu_slots(cfg.gpus)
    key_available = api_key() is not None
    ready, runs, results, swept = [], [], {}, []
    sweeps = {entry.name: entry.sweep for entry in cfg.pipelines}
    started = time.perf_counter()
    with contextlib.ExitStack() as locks:
        for n, (name, folder, out, options) in enumerate(batch_folders(cfg, pipeline)):
            if sweeps[name] is not None:  # its cells are folder runs of their own, after the others (run_sweeps)
                swept.append((folder, out, options, sweeps[name]))
                continue
            try:  # every folder checked and locked up front: a bad one is reported before any work
                raw, job, out_dir = prepare(str(folder), out, options, None)
                locks.enter_context(folder_lock(out_dir, wait=False))
            except FolderBusy as e:
                log.warning("skipped %s: %s", folder, e)
                results[str(folder)] = {"skipped": str(e)}
                continue
            except InputError as e:
                log.error("failed %s: %s", folder, e)
                results[str(folder)] = {"error": str(e)}
                continue
            ready.append((raw, job, out_dir, n % cfg.gpus))

        # a pipeline: the preprocessing of a few folders ahead, each folder's generation as soon as its own
        # preprocessing is done (so the GPU starts early and never waits behind every folder's preprocessing), and
        # each folder finished (video published, run.json, artifacts) while the next one generates
        def finish(run) -> None:
            try:
                results[str(run.raw.root)] = finish_folder(run)
            except Exception as e:  # noqa: BLE001 - one folder's failure is reported; the batch goes on
                log.error("failed %s: %s", run.raw.root, e, extra={"console": False})  # the stage said it
                reason = f"{e.__class__.__name__}: {e}".splitlines()[0][:500]
                results[str(run.raw.root)] = (run.summary or {}) | {"error": reason}

        if ready and not workers:  # the model's files come off the disk while the first folders preprocess
            read_weights_ahead(model_opts, [r[2] for r in ready])
        ahead = max(2, cfg.gpus + 1)
        runs = [submit_folder(*r[:3], model_opts, r[3], key_available) for r in ready[:ahead]]
        for i in range(len(ready)):
            try:
                submit_generation(runs[i], workers)
            except Exception as e:  # noqa: BLE001 - e.g. no worker queue: finish_folder reports the folder
                runs[i].error = f"generation could not be submitted: {e.__class__.__name__}: {e}"
            if len(runs) < len(ready):
                raw, job, out_dir, gpu = ready[len(runs)]
                runs.append(submit_folder(raw, job, out_dir, model_opts, gpu, key_available))
            if i >= cfg.gpus:
                finish(runs[i - cfg.gpus])
        for run in runs[max(len(ready) - cfg.gpus, 0) :]:
            finish(run)
    results |= run_sweeps(swept, model_opts, workers)
    failed = [k for k, r in results.items() if "error" in r]
    done = sum("video" in r for r in results.values())
    log.info(  # the command prints its own summary
        "batch: %d of %d folders done in %.1f s",
        done,
        len(results),
        time.perf_counter() - started,
        extra={"console": "summary"},
    )
    publish_batch_summary(pipeline or Path(pipelines_file).stem, batch_rows(results))
    if failed:
        names = ", ".join(Path(k).name for k in failed)
        return Failed(message=f"{len(failed)} of {len(results)} folders failed: {names}", data=results)
    return results


def run_sweeps(swept: list, model: ModelOptions, workers: bool) -> dict:
    """The folders of pipelines with a `sweep:`, one sweep each (its takes, sheet and table); a folder whose sweep
    fails is reported and the others go on. Returns {folder: summary or {"error": message}}."""
    from scailflow.flows.sweep import sweep_flow

    results = {}
    for folder, out, options, sweep in swept:
        key = str(Path(folder).resolve())
        try:
            r = sweep_flow(str(folder), sweep, Path(folder).name, out, defaults=options, model=model, workers=workers)
        except Exception as e:  # noqa: BLE001 - one folder's failure is reported; the batch goes on
            stage_logger("flow").error("failed %s: %s", folder, e, extra={"console": False})
            results[key] = {"error": f"sweep: {e.__class__.__name__}: {e}".splitlines()[0][:500]}
            continue
        seconds = round(sum(c["seconds"] for c in r["cells"]), 2)
        results[key] = {"state": "Completed", "video": r["sheet"], "sweep": r, "takes": len(r["cells"])}
        results[key]["seconds"] = seconds
    return results


def batch_rows(results: dict) -> list[dict]:
    """The batch summary table: folder, state, reason, video, seconds."""
    rows = []
    for folder, r in results.items():
        state = r.get("state") or ("Skipped" if "skipped" in r else "Failed" if "error" in r else "Completed")
        reason = r.get("error") or r.get("skipped") or ""
        if r.get("failed_stage"):
            reason = f"{r['failed_stage']}: {reason}"
        rows.append(
            {
                "folder": Path(folder).name,
                "state": state,
                "reason": reason[:300],
                "video": r.get("video") or "",
                "seconds": r.get("seconds", ""),
            }
        )
    return rows


def run_batch(pipelines_file: str, pipeline: str | None = None, model: dict | None = None, workers=None):
    """The batch as a caller wants it: (results, final state name), whether or not a folder failed."""
    state = batch_flow(pipelines_file, pipeline, model, workers, return_state=True)
    results = state.result(raise_on_failure=False)
    if isinstance(results, BaseException):  # the batch itself failed (not one of its folders)
        raise results
    return results, state.name


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
