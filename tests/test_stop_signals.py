"""SIGTERM (timeout, systemd, Kubernetes) and SIGINT (Ctrl-C) on a real `scailflow run` in the middle of a generation
(issue 16, point 5): stopped within seconds, one line, exit 143 / 130, no partial file, no process left behind,
the run marked Cancelled, and the next run resumes from the cached stages. SIGKILL leaves no temporary API behind."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scailflow.files import write_text_atomic
from tests.support.folders import make_folder
from tests.support.processes import Process, wait_until

pytestmark = pytest.mark.integration  # starts processes/servers/full flows

STEPS = 1000  # tiny-random steps (the most allowed): minutes of work, so a run that does not stop is caught


class Run(Process):
    """`scailflow run` in a subprocess of its own session (the signal goes to this process only, as `timeout` and
    `kill PID` send it), its output collected line by line."""

    def __init__(self, *args):
        super().__init__(["run", *args])

    def children(self) -> dict[int, str]:
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True).stdout.split()
        return {int(p): _cmdline(int(p)) for p in out}

    kill_all = Process.kill


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _gone(pids, timeout: float = 15) -> list[int]:
    """The pids still running after `timeout` seconds (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _last_run_state(name: str) -> str | None:
    db = Path(os.environ["PREFECT_HOME"]) / "prefect.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as con:
        row = con.execute("select state_type from flow_run where name = ? order by created desc limit 1", (name,))
        found = row.fetchone()
    return found[0] if found else None


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_a_run_within_seconds_and_the_next_run_resumes(tmp_path, sig, code):
    folder = make_folder(tmp_path, name=f"stop-{sig.name}", frames=5)
    out = folder / "scailflow"
    run = Run(folder, "--model", "tiny-random", "--steps", STEPS)
    try:
        run.wait_for(f"/{STEPS} steps")  # the first progress line of generation
        children = run.children()
        assert any("uvicorn" in c for c in children.values()), children  # our temporary API is running
        os.kill(run.proc.pid, sig)
        try:
            rc = run.proc.wait(timeout=30)  # seconds, not the remaining ~2000 steps
        except subprocess.TimeoutExpired:
            pytest.fail(f"{sig.name} did not stop the run within 30 s:\n" + "".join(run.lines[-20:]))
    finally:
        run.kill_all()
        run.finish()  # every line it wrote, read
    text = "".join(run.lines)
    errors = [ln for ln in run.lines if ln.startswith("error:")]
    assert rc == code, text[-3000:]
    assert len(errors) == 1 and f"stopped by {sig.name}" in errors[0] and "re-run to resume" in errors[0], text
    assert "Traceback" not in text and "Crash detected" not in text
    assert not (out / "output.mp4").exists() and not list(out.rglob(".*.partial*"))
    assert _gone(children) == [], {p: _cmdline(p) for p in children}  # no orphaned temporary API
    assert _last_run_state(folder.name) == "CANCELLED"
    again = subprocess.run(
        [sys.executable, "-m", "scailflow.cli", "run", str(folder), "--model", "tiny-random"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "pose Cached" in again.stdout and "masks Cached" in again.stdout and "prompt Cached" in again.stdout
    assert (out / "output.mp4").is_file()


def test_sigkill_leaves_no_temporary_api_behind(tmp_path):
    folder = make_folder(tmp_path, name="killed", frames=5)
    run = Run(folder, "--model", "tiny-random", "--steps", STEPS)
    api: list[int] = []
    try:
        run.wait_for(f"/{STEPS} steps")  # the first progress line of generation
        api = [p for p, c in run.children().items() if "uvicorn" in c]
        assert api, run.children()
        os.kill(run.proc.pid, signal.SIGKILL)  # only the run's own process, as the OOM killer does
        run.proc.wait(30)
        left = _gone(api)
        assert left == [], {p: _cmdline(p) for p in left}
    finally:
        run.kill_all()
        for pid in api:
            if "uvicorn" in _cmdline(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigterm_before_the_flow_starts_is_one_line(tmp_path):
    """A stop during the start (imports, the temporary API starting) is as clean as one mid-generation."""
    folder = make_folder(tmp_path, name="early", frames=5)
    write_text_atomic(folder / "job.yaml", "sampling: {steps: 1, target_h: 64, target_w: 64}\n")
    run = Run(folder, "--model", "tiny-random")
    try:
        starting = lambda: any("uvicorn" in c for c in run.children().values())  # noqa: E731
        wait_until(starting, 120, lambda: "".join(run.lines), every=0.1, alive=run.proc)  # the temporary API starts
        os.kill(run.proc.pid, signal.SIGTERM)
        rc = run.finish(30)
    finally:
        run.kill_all()
    errors = [ln for ln in run.lines if ln.startswith("error:")]
    assert rc == 143 and len(errors) == 1 and "stopped by SIGTERM" in errors[0], "".join(run.lines)
    assert "Traceback" not in "".join(run.lines)
