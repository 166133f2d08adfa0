"""What a stopped run leaves behind, Prefect side: its runs marked Cancelled, and no orphaned temporary API.

Without a server, Prefect starts a temporary API (uvicorn, ~230 MB) as a child process and stops it at a normal
exit only. `start_temporary_api` starts it ourselves, before the flow, so that it is stopped however the run ends:
a normal exit (Prefect's atexit), SIGTERM/SIGINT (a stop callback, scailflow/stop.py), and a SIGKILL of this process
(a small watchdog process that outlives us and stops the API when we are gone).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from scailflow import stop

log = logging.getLogger("scailflow.flow")
_RUNS: list = []

# runs as `python -S -c WATCHDOG <our pid> <api pid>`: once we are gone (reparented), stop the API
WATCHDOG = """
import os, signal, sys, time
parent, child = int(sys.argv[1]), int(sys.argv[2])
signal.signal(signal.SIGINT, signal.SIG_IGN)
def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
while os.getppid() == parent and alive(child):
    time.sleep(0.5)
try:
    ours = b"uvicorn" in open("/proc/%d/cmdline" % child, "rb").read()
except OSError:
    ours = False
if ours and os.getppid() != parent:
    os.kill(child, signal.SIGTERM)
    for _ in range(50):
        if not alive(child):
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
"""


def start_temporary_api() -> str:
    """Start Prefect's temporary API now (the one its client would start on first use) and make sure it never
    outlives this process. Returns its URL."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect's client uses when no API URL is set
    server.start()
    proc = server.server_process
    if proc is not None:
        subprocess.Popen(
            [sys.executable, "-S", "-c", WATCHDOG, str(os.getpid()), str(proc.pid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stop.on_stop(server.stop)
    return server.api_url


def flow_started() -> None:
    """Called first thing in a flow: the stop signals are ours again (Prefect's flow engine took SIGTERM, and would
    wait for the running generation), and this run is marked Cancelled if a signal stops it."""
    stop.reinstall()
    try:
        from prefect.runtime import flow_run

        run_id = flow_run.id
    except Exception:  # noqa: BLE001 - outside a run
        return
    if run_id and not _RUNS:
        stop.on_stop(_cancel_runs)
    if run_id:
        _RUNS.append(run_id)


def _cancel_runs() -> None:
    """The runs of this process, and their unfinished task runs, as Cancelled (best effort, bounded by the stop
    budget: the API may be gone too)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import TaskRunSort
    from prefect.states import Cancelled

    message = "stopped by a signal (SIGTERM/SIGINT); re-run to resume from the cached stages"
    unfinished = TaskRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED])
    with get_client(sync_client=True) as client:
        for run_id in _RUNS:
            state = client.read_flow_run(run_id).state
            if state is not None and state.is_final():  # an earlier run of this process that already ended
                continue
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
                task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=unfinished)),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
            )
            for task_run in tasks:
                client.set_task_run_state(task_run.id, Cancelled(message=message), force=True)
            client.set_flow_run_state(run_id, Cancelled(message=message), force=True)
