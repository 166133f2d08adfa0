"""`scailflow run | batch | serve | status | worker | server | demo | init | schema`: the orchestration commands.

Each command wires its arguments to one call; supervising Prefect (the server child, the watch on a run's server,
serve's Ctrl-C deadline) is in flows/supervise.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable

from scailflow import console
from scailflow.errors import InputError
from scailflow.flows import env
from scailflow.flows.supervise import (
    SERVE_STOP_GRACE_S,
    STOPPED_SERVING,
    StopServing,
    exposure_warning,
    run_prefect_server,
    ui_address,
    watch_server,
)
from scailflow.options import add_flags, from_flags, given
from scailflow.scail.arguments import add_model_arguments
from scailflow.scail.options import ModelOptions

_SERVER: list[str | None] = []


def server_api() -> str | None:
    """The Prefect server's API URL, or None when runs use a temporary API of their own. Prefect's environment is
    set on first use, before Prefect is imported."""
    if not _SERVER:
        _SERVER.append(env.configure())
    return _SERVER[0]


def quiet_prefect_tracebacks() -> None:
    """Prefect logs a failed run with its traceback; for bad input (InputError) the message alone is enough."""

    class NoTraceback(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.exc_info and isinstance(record.exc_info[1], InputError):
                record.exc_info, record.exc_text = None, None
            return True

    from prefect.logging.configuration import setup_logging

    setup_logging()  # Prefect configures its handlers once per process; do it now so they can be filtered
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.flow_engine", "prefect.task_engine"):
        logging.getLogger(name).addFilter(NoTraceback())


def add_job_flags(p: argparse.ArgumentParser) -> None:
    from scailflow.flows.config import JobConfig

    add_flags(p.add_argument_group("job (override job.yaml)"), JobConfig)


def job_overrides(args) -> dict:
    """The job.yaml options given on the command line (nested like job.yaml)."""
    from scailflow.flows.config import JobConfig

    return given(args, JobConfig)


def before_flow() -> None:
    """What every flow command does once its input is checked and before the flow starts: a stop signal's line
    says how to resume, and without a server our own temporary API is started, so it never outlives this process."""
    from scailflow import stop

    stop.set_note("outputs finished so far are kept and their stages cached: re-run to resume")
    if server_api() is None:
        from scailflow.flows.stopping import start_temporary_api

        start_temporary_api()


def add_budget_flags(p: argparse.ArgumentParser) -> None:
    from scailflow.flows.config import BudgetOptions

    add_flags(p.add_argument_group("cost before the run (see `scailflow estimate`)"), BudgetOptions)


def budget_gate(args, planned: Callable[[], tuple[list, ModelOptions, list[str]]]) -> int | None:
    """--dry-run and --max-gpu-minutes, before anything starts: the exit code when the command ends here (a dry
    run: 0 after printing the prediction per folder and stage; over budget: estimate's code after one line), else
    None. `planned()`: (folder, SamplingOptions) of each folder that would run, the model options, and a line for
    each folder left out (shown by a dry run)."""
    from scailflow.flows.config import BudgetOptions

    budget = from_flags(BudgetOptions, args)
    if not budget.checked:
        return None
    from scailflow.flows.estimate import REFUSED_EXIT, plan

    folders, model, left_out = planned()
    predicted = plan(folders, model, budget.gpu, budget.gpu_price)
    if budget.dry_run:
        print("\n".join(left_out + predicted.lines + ([predicted.total()] if len(folders) > 1 else [])))
    if refused := predicted.refusal(budget.max_gpu_minutes):
        print(refused, file=sys.stderr)
        return REFUSED_EXIT
    return 0 if budget.dry_run else None


def _where() -> str:
    if server_api() is not None:
        return f"runs are in the Prefect UI at {ui_address(server_api())}"
    return "no Prefect server is running (`scailflow server` starts one with its UI); this run used a temporary API"


def _print_summary(summary: dict) -> None:
    states = ", ".join(f"{k} {v}" for k, v in summary["states"].items())
    take = f"; take {Path(summary['take']).name}" if summary.get("take") else ""
    print(
        f"{Path(summary['folder']).name}: {summary['video']}  [{states}; seed {summary['seed']}{take}; "
        f"{summary['seconds']} s]"
    )


# ---------------------------------------------------------------------------------------------- run
def add_run_folder_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="raw folder: ref.jpg|png|webp, driving.mp4, optional prompt.txt and job.yaml")
    p.add_argument("--out", help="output folder (default FOLDER/scailflow)")
    p.add_argument(
        "--if-busy",
        choices=("wait", "skip"),
        default="wait",
        help="when another run is processing this folder: wait for it (default) or exit",
    )
    from scailflow.flows.config import RunOptions

    add_flags(p.add_argument_group("this run"), RunOptions)
    add_job_flags(p)
    add_model_arguments(p)
    add_budget_flags(p)


def run_run_folder(args) -> int:
    if (code := budget_gate(args, lambda: ([_folder_sampling(args)], from_flags(ModelOptions, args), []))) is not None:
        return code  # nothing started: no Prefect, no output folder
    server_api()  # Prefect's environment first, before Prefect is imported
    from scailflow.flows.folder_flow import folder_flow, prepare

    overrides = job_overrides(args)
    raw, _, _ = prepare(args.folder, args.out, None, overrides)  # a bad folder fails here, before Prefect runs
    model = from_flags(ModelOptions, args)
    if not args.debug:
        quiet_prefect_tracebacks()
    watch_server(server_api())
    from scailflow.flows.config import RunOptions

    before_flow()
    summary = folder_flow(
        str(raw.root),
        folder_name=raw.name,
        out=args.out,
        overrides=overrides,
        model=model,
        wait_if_busy=args.if_busy == "wait",
        run=from_flags(RunOptions, args),
    )
    _print_summary(summary)
    print(_where())
    return 0


def _folder_sampling(args):
    """(folder, its sampling options: job.yaml and flags) of `run`, checked as the run checks them."""
    from scailflow.flows.config import load_job
    from scailflow.flows.folder import output_dir, scan_folder

    raw = scan_folder(args.folder)
    output_dir(raw, args.out)  # a refused output folder is refused here too
    return args.folder, load_job(raw.root, overrides=job_overrides(args)).sampling


# ---------------------------------------------------------------------------------------------- batch / serve
def add_batch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pipelines", help="pipelines.yaml")
    p.add_argument("--pipeline", help="run only the pipeline of this name")
    p.add_argument(
        "--workers",
        action="store_true",
        default=None,
        help="send generation to warm GPU workers (`scailflow worker`) instead of this process",
    )
    add_model_arguments(p)
    add_budget_flags(p)


def _batch_sampling(args) -> tuple[list, ModelOptions, list[str]]:
    """(folder, sampling options, its pipeline's sweep or None) of every folder the batch would run (a bad folder,
    which the batch reports and skips, is left out with a line saying so), and the batch's model options."""
    from scailflow.flows.batch_flow import batch_folders
    from scailflow.flows.config import load_job, load_pipelines
    from scailflow.flows.folder import scan_folder
    from scailflow.options import merge

    cfg = load_pipelines(args.pipelines)
    folders, left_out = [], []
    sweeps = {entry.name: entry.sweep for entry in cfg.pipelines}
    for name, folder, _out, options in batch_folders(cfg, args.pipeline):
        try:
            folders.append((str(folder), load_job(scan_folder(folder).root, options).sampling, sweeps[name]))
        except InputError as e:
            left_out.append(f"{Path(folder).name}: not estimated, the batch skips it: {e}")
    model = ModelOptions.model_validate(merge(cfg.model.model_dump(exclude_unset=True), given(args, ModelOptions)))
    return folders, model, left_out


def run_batch(args) -> int:
    server_api()  # Prefect's environment first, before Prefect is imported
    if (code := budget_gate(args, lambda: _batch_sampling(args))) is not None:
        return code  # nothing started
    from scailflow.flows.batch_flow import batch_folders
    from scailflow.flows.batch_flow import run_batch as batch
    from scailflow.flows.config import load_pipelines

    batch_folders(load_pipelines(args.pipelines), args.pipeline)  # validate first: one line, and not an empty batch
    console.show_folders()  # several folders at once: every line says which
    if not args.debug:
        quiet_prefect_tracebacks()
    watch_server(server_api())
    before_flow()
    results, state = batch(str(Path(args.pipelines).resolve()), args.pipeline, given(args, ModelOptions), args.workers)
    failed = {k: v["error"] for k, v in results.items() if "error" in v}
    for folder, summary in results.items():
        if "error" in summary:
            print(f"{Path(folder).name}: FAILED: {summary['error']}")
        elif "skipped" in summary:
            print(f"{Path(folder).name}: skipped: {summary['skipped']}")
        elif "sweep" in summary:
            print(
                f"{Path(folder).name}: sweep of {summary['takes']} takes: {summary['video']}  [{summary['seconds']} s]"
            )
        else:
            _print_summary(summary)
    done = sum("video" in v for v in results.values())
    print(f"{done} of {len(results)} folders done; batch {state}; {_where()}")
    return 1 if failed else 0


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pipelines", help="pipelines.yaml with `schedule:` on the pipelines to serve")


def run_serve(args) -> int:
    server_api()  # Prefect's environment first, before Prefect is imported
    if not args.debug:  # scheduled runs start in processes of Prefect's runner: quiet until our flow takes over
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "WARNING")
    from prefect import serve

    from scailflow.flows.batch_flow import build_deployments

    deployments = build_deployments(args.pipelines)
    if server_api() is None:
        raise InputError(
            "schedules need a running Prefect server: start `scailflow server` first (or set PREFECT_API_URL)"
        )
    console.show_folders()
    names = ", ".join(f"{d.name} ({_schedule_text(d)})" for d in deployments)
    print(f"serving {len(deployments)} scheduled pipeline(s): {names}; {_where()}; Ctrl-C stops", flush=True)
    stopping = StopServing(deployments, SERVE_STOP_GRACE_S)
    try:
        serve(*deployments, print_starting_message=False)
    except KeyboardInterrupt:
        pass
    # Prefect's serve returns (or raises) only when interrupted; it paused the schedules on the way out
    stopping.finished()
    print(STOPPED_SERVING, file=sys.stderr)
    return 130


def _schedule_text(deployment) -> str:
    sched = deployment.schedules[0].schedule if deployment.schedules else None
    if getattr(sched, "cron", None):
        return f"cron {sched.cron}"
    interval = getattr(sched, "interval", None)
    return f"every {interval.total_seconds():g} s" if interval is not None else "no schedule"


# ---------------------------------------------------------------------------------------------- status
def add_status_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", nargs="?", help="a raw folder: its last run's stages, seconds and takes")
    p.add_argument("--out", help="the folder's output folder, when it was run with --out")
    p.add_argument("--last", type=int, default=10, metavar="N", help="how many recent runs to list (default 10)")


def run_status(args) -> int:
    from scailflow.flows import status

    if args.last < 1:
        raise InputError(f"--last: must be at least 1 (got {args.last})")
    if args.folder:
        print(status.folder_report(args.folder, args.out))
        return 0
    if server_api() is not None:
        status.print_recent(status.recent_from_api(args.last), f"Prefect server {server_api()}")
    else:
        status.print_recent(status.recent_from_history(args.last), f"run history in {env.data_dir()}")
    return 0


# ---------------------------------------------------------------------------------------------- worker
def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=None, help="stop after this many seconds (default: never)")
    add_model_arguments(p)


def run_worker(args) -> int:
    server_api()  # Prefect's environment first, before Prefect is imported
    from scailflow.flows.worker import serve_generation

    console.show_folders()
    serve_generation(from_flags(ModelOptions, args), args.timeout)
    return 0


# ---------------------------------------------------------------------------------------------- server
def add_server_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=int(os.environ.get("SCAILFLOW_PORT", env.DEFAULT_PORT)))
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")


def run_server(args) -> int:
    server_api()  # Prefect's environment first, before Prefect is imported
    warning = exposure_warning(args.host)
    if warning:
        print(warning, file=sys.stderr)
    print(f"Prefect UI and API on http://{args.host}:{args.port} (state in {os.environ['PREFECT_HOME']}); Ctrl-C stops")
    return run_prefect_server(args.host, args.port, args.debug)


# ---------------------------------------------------------------------------------------------- demo
DEMO_MODEL = {"model": "tiny-random"}  # the demo needs no download; --model scail2 runs the released model


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--folder", default=None, help="where to build the sample folder (default SCAILFLOW_HOME/demo)")
    add_flags(p.add_argument_group("model"), ModelOptions, defaults=DEMO_MODEL)


def run_demo(args) -> int:
    server_api()  # Prefect's environment first, before Prefect is imported
    from scailflow.flows.demo import build_demo_folder
    from scailflow.flows.folder_flow import folder_flow

    folder = build_demo_folder(args.folder or env.data_dir() / "demo" / "astronaut")
    print(f"sample folder: {folder} (reference: scikit-image's astronaut photo; driving video: it, swaying)")
    if not args.debug:
        quiet_prefect_tracebacks()
    model = from_flags(ModelOptions, args, base=DEMO_MODEL)
    before_flow()
    summary = folder_flow(str(folder), folder_name=folder.name, model=model)
    _print_summary(summary)
    out = Path(summary["out_dir"])
    names = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    print(f"outputs in {out}: " + ", ".join(names))
    if model.model == "tiny-random":
        print(
            "the video comes from the tiny-random model: untrained, its pixels are noise; the masks and the "
            "driving copy are real"
        )
    print(_where())
    return 0


# ---------------------------------------------------------------------------------------------- init / schema
def add_init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", nargs="?", default=".", help="where to write it (default: here)")
    p.add_argument("--pipelines", action="store_true", help="write pipelines.yaml (a batch) instead of job.yaml")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")


def run_init(args) -> int:
    from scailflow.files import write_text_atomic
    from scailflow.flows.starter import job_yaml, pipelines_yaml

    folder = Path(args.folder)
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    path = folder / ("pipelines.yaml" if args.pipelines else "job.yaml")
    if path.exists() and not args.force:
        raise InputError(f"{path} exists; --force overwrites it")
    write_text_atomic(path, pipelines_yaml() if args.pipelines else job_yaml())
    print(f"wrote {path} (every option with its default and meaning; uncomment what you change)")
    return 0


def add_schema_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=("job", "pipelines"), help="job.yaml or pipelines.yaml")


def run_schema(args) -> int:
    from scailflow.flows.starter import json_schema

    print(json_schema(args.kind))
    return 0
