"""`scailflow status [FOLDER | --last N]`: what ran, how it ended, where the videos are.

With a Prefect server the recent runs come from its API (scheduled runs included); without one, from the run
history every folder run appends to (SCAILFLOW_HOME/runs.jsonl). A folder's own `run.json` gives its stages,
seconds and takes.
"""

from __future__ import annotations

import json
from pathlib import Path

from scailflow.errors import InputError
from scailflow.flows.folder import OUTPUT_DIRNAME
from scailflow.flows.report import read_history


def _ago(iso: str | None) -> str:
    return (iso or "")[:19].replace("T", " ")


def recent_from_api(last: int) -> list[dict]:
    """The last runs of the scailflow flows, newest first, as the server has them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterId,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort, FlowSort

    with get_client(sync_client=True) as client:
        flows = client.read_flows(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["scailflow-folder", "scailflow-batch"])),
            sort=FlowSort.NAME_ASC,
            limit=10,
        )
        names = {f.id: f.name.removeprefix("scailflow-") for f in flows}
        if not names:
            return []
        # runs that started (scheduled ones waiting for their time are not "recent runs"), newest first
        started = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED, StateType.PENDING]))
        )
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(id=FlowFilterId(any_=list(names))),
            flow_run_filter=started,
            sort=FlowRunSort.START_TIME_DESC,
            limit=last,
        )
    return [
        {
            "when": _ago(r.start_time.isoformat() if r.start_time else r.expected_start_time.isoformat()),
            "kind": names.get(r.flow_id, "?"),
            "name": r.name,
            "state": r.state.name if r.state else "?",
            "seconds": round(r.total_run_time.total_seconds(), 1),
            "detail": (r.state.message or "") if r.state and r.state.is_failed() else "",
        }
        for r in runs
    ]


def recent_from_history(last: int) -> list[dict]:
    return [
        {
            "when": _ago(h.get("finished")),
            "kind": "folder",
            "name": h.get("folder_name") or Path(h.get("folder", "?")).name,
            "state": h.get("state", "?"),
            "seconds": h.get("seconds", ""),
            "detail": h.get("error") or h.get("video") or "",
        }
        for h in reversed(read_history(last))
    ]


def print_recent(rows: list[dict], source: str) -> None:
    if not rows:
        print(f"no runs yet ({source})")
        return
    print(f"recent runs ({source}), newest first:")
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(
            f"  {r['when']:19}  {r['kind']:6}  {r['name']:{width}}  {r['state']:10}  {r['seconds']!s:>7} s  {r['detail']}"
        )


def folder_report(folder: str, out: str | None = None) -> str:
    """A folder's last run (run.json) and its takes, as lines of text."""
    root = Path(folder)
    candidates = [Path(out)] if out else [root / OUTPUT_DIRNAME, root]
    run_json = next((c / "run.json" for c in candidates if (c / "run.json").is_file()), None)
    generating = generation_lines(candidates)
    if run_json is None and generating:  # the first run, still generating (or interrupted)
        return "\n".join([f"{root.name}: no finished run yet", *generating])
    if run_json is None:
        raise InputError(f"{folder}: no run.json (not run yet, or its outputs are elsewhere: pass --out DIR)")
    try:
        run = json.loads(run_json.read_text())
    except ValueError:
        raise InputError(f"{run_json}: not valid JSON") from None
    seconds = run.get("stage_seconds", {})
    lines = [
        f"{run.get('folder_name') or root.name}: {run.get('state', '?')} at {_ago(run.get('finished'))} "
        f"({run.get('seconds', '?')} s), outputs in {run_json.parent}"
    ]
    for stage, state in run.get("states", {}).items():
        secs = f"{seconds[stage]:.2f} s" if stage in seconds else ""
        lines.append(f"  {stage:9} {state:10} {secs}")
    if run.get("gpu_wait_s"):
        lines.append(f"  (generation waited {run['gpu_wait_s']} s for its GPU)")
    if run.get("state") == "Failed":
        lines.append(f"  failed in {run.get('failed_stage')}: {run.get('error')}")
    else:
        lines.append(f"  video {run.get('video')} (seed {run.get('seed')})")
    lines += generating
    takes = sorted((run_json.parent / "takes").glob("*.mp4"), key=lambda p: p.stat().st_mtime, reverse=True)
    if takes:
        latest = Path(run.get("take") or "").name
        lines.append(f"  takes ({len(takes)}, newest first; * = output.mp4):")
        lines += [f"    {'*' if t.name == latest else ' '} {t.name}" for t in takes]
    return "\n".join(lines)


def generation_lines(out_dirs: list[Path]) -> list[str]:
    """A long generation's kept segments (running or interrupted): segments done / total and the ETA."""
    from scailflow.layout import segments_root
    from scailflow.scail.segment_status import status_line  # torch-free (the resume module imports torch)

    lines = []
    for out in out_dirs:
        root = segments_root(str(out))
        for d in sorted(root.glob("*")) if root.is_dir() else ():
            line = status_line(d)
            if line:
                lines.append(f"  generating {d.name}.mp4: {line}")
    return lines
