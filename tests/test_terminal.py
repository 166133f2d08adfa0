"""What a person sees in a terminal: progress bars with s/step and ETA under a real pty, plain lines when the output
is a pipe, every line naming its stage (and folder in a batch), no third-party noise, one summary."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import numpy as np
import pytest

from scailflow.media import write_image
from tests.support.folders import make_folder

pytestmark = pytest.mark.integration  # starts processes/servers/full flows

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
NOISE = (
    "TensorFlow Lite",
    "absl::InitializeLog",
    "inference_feedback_manager",
    "Finished in state",
    "Starting temporary server",
    "NotReady",
    "Traceback",
    "Prefect collects anonymous usage data",
)
STAGE_LINE = re.compile(r"^(\[[\w.-]+\] )?(pose|masks|prompt|generate|run|batch): ")


def scailflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "scailflow.cli", *args]


def run_in_pty(cmd: list[str], env: dict, timeout: float = 600, cols: int = 140) -> tuple[int, str]:
    """Run `cmd` with a pseudo-terminal as its stdin/stdout/stderr (what a shell gives it); returns its exit code and
    everything it wrote, escape sequences included."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        else:
            os.killpg(proc.pid, signal.SIGKILL)
    finally:
        os.close(master)
    return proc.wait(timeout=60), out.decode("utf-8", "replace")


# seconds per step, or steps per second once a step takes under a second (the tiny model on a fast machine)
STEP_RATE = r"(\d+\.\d\d s/step|\d+ steps/s)"


def screen_lines(raw: str) -> list[str]:
    """The text lines of a terminal recording: colours dropped, each carriage-return redraw a line of its own."""
    return [ln.strip() for ln in re.split(r"[\r\n]+", ANSI.sub("", raw)) if ln.strip()]


def test_a_terminal_gets_bars_with_seconds_per_step_and_eta_and_no_noise(tmp_path):
    folder = make_folder(tmp_path, "tty", frames=13, size=64)
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="140")
    code, raw = run_in_pty(scailflow("run", str(folder), "--model", "tiny-random", "--steps", "4"), env)
    lines = screen_lines(raw)
    text = "\n".join(lines)
    assert code == 0, text[-3000:]
    assert "━" in raw  # bars are drawn (rich's bar glyph), in colour
    # the denoising bar: segment, steps done of all, seconds per step, time elapsed and left
    assert any(
        re.search(rf"^generate denoise segment 1/1 ━+ [1-4]/4 steps · {STEP_RATE} .*· ETA \d+:\d\d$", ln)
        for ln in lines
    ), text
    assert any(re.search(r"^masks track ━+ \d+/13 frames", ln) for ln in lines), text  # mask frames
    assert any(re.search(r"^generate decode ━+ 13/13 frames", ln) for ln in lines), text  # the VAE decode
    # a finished bar leaves one line with its totals
    assert sum(ln.startswith("generate: denoise: 4 steps in ") and bool(re.search(STEP_RATE, ln)) for ln in lines) == 1
    for noise in NOISE:
        assert noise not in text, noise
    # every line is a bar, names its stage, or is the summary (once) and where the UI is
    summary = [ln for ln in lines if ln.startswith("tty: ") and "output.mp4" in ln]
    assert len(summary) == 1, text
    others = [ln for ln in lines if not (STAGE_LINE.match(ln) or "━" in ln or ln in summary)]
    assert all(ln.startswith("no Prefect server is running") for ln in others), others


@pytest.mark.slow
def test_a_pipe_gets_plain_stage_named_lines_and_a_rerun_says_cached(tmp_path, shared_server):
    """The first run without a server (a temporary API of its own); the rerun reports to one (the session's): the
    stages' cache is the folder's, whichever API records the runs."""
    folder = make_folder(tmp_path, "piped", frames=13, size=64)
    env = dict(os.environ, SCAILFLOW_PROGRESS_INTERVAL="0")  # a progress line at every step
    cmd = scailflow("run", str(folder), "--model", "tiny-random", "--steps", "3")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "\x1b[" not in r.stderr and "━" not in r.stderr  # no escape sequences, no bars
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert all(STAGE_LINE.match(ln) for ln in err), [ln for ln in err if not STAGE_LINE.match(ln)]
    assert "generate: denoise segment 1/1: 1/3 steps · " in r.stderr
    assert re.search(rf"generate: denoise segment 1/1: 2/3 steps · {STEP_RATE} · ETA \d+:\d\d", r.stderr)
    assert re.search(r"masks: track: \d+/13 frames · ", r.stderr)
    assert "generate: decode: 13 frames in " in r.stderr
    for noise in NOISE:
        assert noise not in r.stderr + r.stdout, noise
    out = r.stdout.splitlines()
    assert len(out) == 2 and out[0].startswith(f"piped: {(folder / 'scailflow' / 'output.mp4').resolve()}  [")
    env["SCAILFLOW_PORT"] = shared_server[1]["SCAILFLOW_PORT"]
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("pose", "masks", "prompt", "generate"):
        assert f"{stage}: cached: inputs unchanged, not run again" in again.stderr
    assert "denoise" not in again.stderr


@pytest.mark.usefixtures("report_to_shared_server")  # no temporary API: the session's server records the runs
def test_batch_lines_name_their_folder_and_say_what_failed_plainly(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a", "b"):
        make_folder(clips, name, frames=5, size=64)
    write_image(clips / "b" / "ref.png", np.zeros((64, 64, 3), np.uint8))  # nobody in b's reference
    (tmp_path / "pipelines.yaml").write_text(
        "model: {model: tiny-random}\npipelines:\n  - name: g\n    root: clips\n"
        "    options: {sampling: {steps: 2, target_h: 32, target_w: 32}}\n"
    )
    r = subprocess.run(
        scailflow("batch", str(tmp_path / "pipelines.yaml")), capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 1, r.stderr[-3000:]
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    stage_lines = [ln for ln in err if re.match(r"^\[\w+\] (pose|masks|prompt|generate): ", ln)]
    assert len(stage_lines) >= 6 and {ln[1] for ln in stage_lines} == {"a", "b"}
    assert all(STAGE_LINE.match(ln) for ln in err), [ln for ln in err if not STAGE_LINE.match(ln)]
    assert any(ln.startswith("[b] masks: failed: no person found in the reference image") for ln in err), err
    assert "[b] generate: not run: an earlier stage of this folder failed" in err
    for noise in NOISE:
        assert noise not in r.stderr + r.stdout, noise
    assert r.stdout.count("b: FAILED: NoPersonError: no person found in the reference image") == 1
    assert r.stdout.count("1 of 2 folders done") == 1


def test_pose_command_prints_a_summary_and_json_on_request(tmp_path):
    folder = make_folder(tmp_path, "p", frames=5, size=64)
    r = subprocess.run(
        scailflow("pose", str(folder / "driving.mp4"), "--out", str(tmp_path / "o")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"wrote {(tmp_path / 'o' / 'rendered_v2.mp4').resolve()}",
        "5 frames, 64x64 at 16 fps; end-to-end: the driving video copied as is",
    ]
    r = subprocess.run(
        scailflow("pose", str(folder / "driving.mp4"), "--out", str(tmp_path / "o"), "--json"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert json.loads(r.stdout)["frames"] == 5
