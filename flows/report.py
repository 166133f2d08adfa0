"""What a finished folder run leaves for people: `run.json`, a line in the run history, the UI artifacts.

Stage seconds are what each stage measured of its own run (0 when served from cache; the Prefect API records task
states through events, so reading them back right after a run may find them not yet written), and generation's
wait for its GPU slot is kept apart from its generating time.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from scailflow.errors import InputError
from scailflow.files import write_text_atomic
from scailflow.flows import env
from scailflow.options import STAGES

HISTORY = "runs.jsonl"  # under SCAILFLOW_HOME: one line per folder run, what `scailflow status` lists offline


def stage_seconds(futures: dict) -> dict[str, float]:
    """Each stage's own running time as the stage measured it (generation: waiting for its GPU included, see
    gpu_wait_s); 0 for a stage served from cache."""
    out = {}
    for name, fut in futures.items():
        state = fut.state
        if not state.is_completed():
            continue
        result = state.result() if state.name != "Cached" else {}
        out[name] = round(float(result.get("seconds", 0.0) if isinstance(result, dict) else result.seconds), 2)
    return out


def _flow_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id) if flow_run.id else None
    except Exception:  # noqa: BLE001 - outside a flow run
        return None


def _base(run) -> dict:
    states = {name: run.futures[name].state.name if name in run.futures else "NotRun" for name in STAGES}
    return {
        "folder": str(run.raw.root),
        "folder_name": run.raw.name,
        "driving": str(run.raw.driving),
        "out_dir": str(run.out_dir),
        "states": states,
        "stage_seconds": stage_seconds(run.futures),
        "flow_run_id": _flow_run_id(),
    }


def folder_summary(run) -> dict:
    """A finished folder's summary (also its run.json)."""
    from scailflow.tasks.generate import upstream

    gen = run.futures["generate"].state.result()
    _, masks, prompt = upstream(*(run.futures[name].state.result() for name in ("pose", "masks", "prompt")))
    summary = _base(run) | {
        "state": "Completed",
        "files": gen["files"],
        "video": gen["video"],
        "take": gen.get("take"),
        "record": str(gen["video"]) + ".json",
        "seed": gen["seed"],
        "frames": gen["frames"],
        "model": gen["model"],
        "prompt_source": prompt.source,
        "persons": masks.persons,
        "generated_by_pid": gen.get("worker_pid"),
        "model_loads_in_that_process": gen.get("model_loads_in_worker"),
    }
    generated = summary["states"]["generate"] != "Cached"
    summary["gpu_wait_s"] = round(gen.get("gpu_wait_s", 0.0), 2) if generated else 0.0
    summary["seconds"] = round(time.perf_counter() - run.started, 2)
    if generated:  # what `scailflow estimate` would have predicted from the runs before this one, and the actual
        from scailflow.flows.estimate import predicted_vs_actual

        summary["estimate"] = predicted_vs_actual(summary["take"])
    return summary


def failed_summary(run, stage: str, reason: str | None = None) -> dict:
    """A failed folder's summary: which stage, and why (one line)."""
    if stage not in run.futures:  # never started (e.g. generation could not be submitted)
        reason = reason or f"{stage} did not run"
    else:
        state = run.futures[stage].state
        reason = state.message or state.name
        try:
            exc = state.result(raise_on_failure=False)
            if isinstance(exc, BaseException):
                reason = str(exc) if isinstance(exc, InputError) else f"{exc.__class__.__name__}: {exc}"
        except Exception as e:  # noqa: BLE001 - the stored failure could not be read: keep the state's message
            reason = f"{reason} ({e.__class__.__name__})"
    summary = _base(run) | {"state": "Failed", "failed_stage": stage, "error": reason.splitlines()[0][:500]}
    summary["seconds"] = round(time.perf_counter() - run.started, 2)
    return summary


def record_run(summary: dict, out_dir: Path) -> None:
    """run.json beside the outputs, a line in the history, and the run's artifacts in the UI."""
    from scailflow.flows.artifacts import publish_artifacts, publish_failure

    summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_text_atomic(out_dir / "run.json", json.dumps(summary, indent=2))
    append_history(summary)
    (publish_artifacts if summary["state"] == "Completed" else publish_failure)(summary)


def append_history(summary: dict) -> None:
    keep = ("finished", "folder_name", "folder", "out_dir", "state", "failed_stage", "error", "video", "take", "seed")
    line = json.dumps({k: summary.get(k) for k in keep} | {"seconds": summary.get("seconds")}) + "\n"
    path = env.data_dir() / HISTORY
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())  # one write of one line: appends from parallel runs never interleave
    finally:
        os.close(fd)


def read_history(last: int) -> list[dict]:
    path = env.data_dir() / HISTORY
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines()[-last:]:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
