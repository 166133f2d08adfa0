"""Orchestration overhead: a cached re-run of one folder, and a batch of N folders on the tiny-random model.

"Outside the stages" = wall time during which no stage task was running (the union of the task runs' intervals,
read back from the Prefect API), i.e. what Prefect and our flow code cost on top of the work itself.

    python bench/bench_flow.py [--folders 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("SCAILFLOW_HOME", tempfile.mkdtemp(prefix="bench-flow-"))

from scailflow.flows import env  # noqa: E402

env.configure()

from scailflow.files import write_text_atomic  # noqa: E402
from scailflow.flows.batch_flow import batch_flow  # noqa: E402
from scailflow.flows.demo import astronaut, sway_frames  # noqa: E402
from scailflow.flows.folder_flow import folder_flow  # noqa: E402
from scailflow.media import write_image, write_video  # noqa: E402

JOB = "sampling: {steps: 2, target_h: 64, target_w: 64, seed: 1}\n"


def make_folder(root: Path, name: str, frames: int = 9) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    still = astronaut(96)
    write_image(folder / "ref.png", still)
    write_video(folder / "driving.mp4", sway_frames(still, frames), fps=16)
    write_text_atomic(folder / "prompt.txt", "A woman sways.\n")
    write_text_atomic(folder / "job.yaml", JOB)
    return folder


def busy_seconds(flow_run_ids: list) -> tuple[float, int]:
    """Union of the task runs' [start, end] intervals under these flow runs, and how many task runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)),
            limit=200,
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
        )
    spans = sorted((r.start_time.timestamp(), r.end_time.timestamp()) for r in runs if r.start_time and r.end_time)
    total, cur = 0.0, None
    for s, e in spans:
        if cur is None or s > cur[1]:
            if cur:
                total += cur[1] - cur[0]
            cur = [s, e]
        else:
            cur[1] = max(cur[1], e)
    if cur:
        total += cur[1] - cur[0]
    return total, len(runs)


def timed_flow(fn, *args, **kwargs):
    t0 = time.perf_counter()
    state = fn(*args, return_state=True, **kwargs)
    wall = time.perf_counter() - t0
    return state, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folders", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-folders-"))
    rows = []

    one = make_folder(root / "single", "clip")
    t0 = time.perf_counter()
    state, cold = timed_flow(folder_flow, str(one), folder_name="clip", model={"model": "tiny-random"})
    first_call = time.perf_counter() - t0
    busy, n = busy_seconds([state.state_details.flow_run_id])
    rows.append(("one folder, first run (temporary API start included)", first_call, busy, n))
    state, warm = timed_flow(folder_flow, str(one), folder_name="clip", model={"model": "tiny-random"})
    summary = state.result()
    assert set(summary["states"].values()) == {"Cached"}, summary["states"]
    busy, n = busy_seconds([state.state_details.flow_run_id])
    rows.append(("one folder, cached re-run", warm, busy, n))

    clips = root / "batch" / "clips"
    for i in range(args.folders):
        make_folder(clips, f"clip{i:02d}")
    pipelines = root / "batch" / "pipelines.yaml"
    write_text_atomic(pipelines, "model: {model: tiny-random}\npipelines:\n  - name: bench\n    root: clips\n")
    state, wall = timed_flow(batch_flow, str(pipelines))
    results = state.result()
    assert all("error" not in r for r in results.values()), results
    busy, n = busy_seconds([state.state_details.flow_run_id])  # batch tasks run directly under the batch flow
    rows.append((f"batch of {args.folders} folders, first run", wall, busy, n))
    state, wall = timed_flow(batch_flow, str(pipelines))
    busy, n = busy_seconds([state.state_details.flow_run_id])
    rows.append((f"batch of {args.folders} folders, cached re-run", wall, busy, n))

    machine = f"{platform.node()} ({os.cpu_count()} CPU cores, {platform.python_version()})"
    print(
        f"\nscailflow orchestration overhead, {date.today()}, {machine}, Prefect API: {env.configure() or 'ephemeral'}"
    )
    print(f"{'case':58} {'wall s':>8} {'in stages s':>12} {'outside s':>10} {'task runs':>10}")
    out = []
    for name, wall, busy, n in rows:
        print(f"{name:58} {wall:8.2f} {busy:12.2f} {max(wall - busy, 0):10.2f} {n:10d}")
        out.append(
            {
                "case": name,
                "wall_s": round(wall, 3),
                "in_stages_s": round(busy, 3),
                "outside_stages_s": round(max(wall - busy, 0), 3),
                "task_runs": n,
            }
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"date": str(date.today()), "machine": machine, "rows": out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
