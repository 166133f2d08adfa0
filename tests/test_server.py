"""`scailflow server`: the Prefect server and UI on 127.0.0.1; `scailflow run` finds it and its runs show there."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from scailflow.files import write_text_atomic
from scailflow.media import probe_video
from tests.test_flows import make_folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, data: dict | None = None):
    req = urllib.request.Request(
        url, data=json.dumps(data).encode() if data is not None else None, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()


@contextlib.contextmanager
def scailflow_server(home, **extra_env):
    """`scailflow server` on a free port with its own data dir; yields (url, env for clients of it)."""
    port = free_port()
    env = dict(os.environ, SCAILFLOW_HOME=str(home), SCAILFLOW_PORT=str(port), **extra_env)
    env.pop("PREFECT_HOME", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scailflow.cli", "server", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if get(f"{url}/api/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the server did not come up in 120 s")
        yield url, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    with scailflow_server(tmp_path / "home") as started:
        yield started


def test_server_ui_and_a_run_reported_to_it(server, tmp_path):
    url, env = server
    status, body = get(url + "/")
    assert status == 200 and b"<html" in body.lower()
    folder = make_folder(tmp_path, "served", frames=5)
    r = subprocess.run(
        [sys.executable, "-m", "scailflow.cli", "run", str(folder), "--model", "tiny-random"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert f"runs are in the Prefect UI at {url}" in r.stdout
    _, body = get(url + "/api/flow_runs/filter", {"flow_runs": {"name": {"any_": ["served"]}}})
    runs = json.loads(body)
    assert runs and runs[0]["state"]["type"] == "COMPLETED"
    _, body = get(url + "/api/artifacts/filter", {"artifacts": {"key": {"any_": ["scailflow-served"]}}})
    assert json.loads(body), "the run's artifact is in the UI"


def test_server_going_away_mid_batch_stops_cleanly_and_the_rerun_resumes(tmp_path):
    from scailflow.files import write_text_atomic

    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a", "b", "c"):
        make_folder(clips, name, frames=5, size=64)
    write_text_atomic(
        tmp_path / "pipelines.yaml",
        "model: {model: tiny-random}\npipelines:\n  - name: g\n"
        "    root: clips\n    options: {sampling: {steps: 2, target_h: 32, target_w: 32}}\n",
    )
    home = tmp_path / "home"
    with scailflow_server(home) as (url, env):
        batch = subprocess.Popen(
            [sys.executable, "-m", "scailflow.cli", "batch", str(tmp_path / "pipelines.yaml")],
            env=dict(env, PYTHONUNBUFFERED="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(iter(batch.stdout.readline, "")), daemon=True).start()
        deadline = time.time() + 120
        while not any("follow it in the Prefect UI" in ln for ln in lines):  # the batch's flow run has begun
            assert time.time() < deadline and batch.poll() is None, "".join(lines[-20:])
            time.sleep(0.1)
        time.sleep(1.0)
    # the server is gone (the context stopped it) while the batch works
    code = batch.wait(timeout=120)
    output = "".join(lines)
    assert code == 4 and "lost the Prefect server" in output, output[-2000:]
    for name in ("a", "b", "c"):  # whatever was written is whole: a final name only ever holds a finished file
        video = clips / name / "scailflow" / "output.mp4"
        assert not video.exists() or probe_video(video).frames == 5
    with scailflow_server(home) as (url, env):  # back again: the same batch resumes
        r = subprocess.run(
            [sys.executable, "-m", "scailflow.cli", "batch", str(tmp_path / "pipelines.yaml")],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 of 3 folders done" in r.stdout
    assert not list(clips.rglob(".*.partial*"))


# ---------------------------------------------------------------------------------------------- schedules and the UI
@pytest.fixture(scope="module")
def chosen_port_server(tmp_path_factory):
    """One `scailflow server` on a free port (never Prefect's default 4200) for the tests below."""
    with scailflow_server(tmp_path_factory.mktemp("served") / "home") as started:
        yield started


def api(url: str, path: str, body: dict) -> list[dict]:
    return json.loads(get(f"{url}/api{path}", body)[1])


def test_a_scheduled_pipeline_fires_and_completes(chosen_port_server, tmp_path):
    """`scailflow serve` with a short interval: the server's scheduler creates runs, one completes with its video,
    and Prefect's own CLI lists runs and artifacts (no 422)."""
    url, env = chosen_port_server
    clips = tmp_path / "clips"
    clips.mkdir()
    make_folder(clips, "nightly-clip", frames=5, size=64)
    write_text_atomic(
        tmp_path / "pipelines.yaml",
        "model: {model: tiny-random}\npipelines:\n  - name: every-few-seconds\n    root: clips\n"
        "    options: {sampling: {steps: 1, target_h: 32, target_w: 32}}\n    schedule: {interval_seconds: 5}\n",
    )
    serve = subprocess.Popen(
        [sys.executable, "-m", "scailflow.cli", "serve", str(tmp_path / "pipelines.yaml")],
        env=dict(env, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(serve.stdout.readline, "")), daemon=True).start()
    try:
        video = clips / "nightly-clip" / "scailflow" / "output.mp4"
        deadline, done = time.time() + 420, []
        while not (done and video.is_file()):  # a run that found the folder busy (the previous one) skips it
            assert time.time() < deadline and serve.poll() is None, "no scheduled run completed:\n" + "".join(
                lines[-30:]
            )
            time.sleep(3)
            runs = api(url, "/flow_runs/filter", {"flow_runs": {"name": {"any_": ["batch-every-few-seconds"]}}})
            done = [r for r in runs if r["deployment_id"] and r["state"]["type"] == "COMPLETED"]
        assert done[0]["auto_scheduled"]  # made by the server's scheduler, not by hand
        assert probe_video(video).frames == 5
        cli_env = dict(env, PREFECT_API_URL=f"{url}/api")
        for what in (["flow-run", "ls"], ["artifact", "ls"]):
            r = subprocess.run(
                [sys.executable, "-m", "prefect", *what], env=cli_env, capture_output=True, text=True, timeout=120
            )
            assert r.returncode == 0 and "Unprocessable" not in r.stdout + r.stderr, r.stdout[-1500:] + r.stderr[-1500:]
        status = subprocess.run(
            [sys.executable, "-m", "scailflow.cli", "status", "--last", "5"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 0 and re.search(r"batch\s+batch-every-few-seconds\s+Completed", status.stdout), (
            status.stdout + status.stderr
        )
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)


def chromium() -> str:
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if not found:
        pytest.fail("chromium not found: install Debian's `chromium` (as .ci/run does)")
    return found


def rendered_text(url: str, profile: Path) -> str:
    """The page as headless Chromium renders it (scripts run, API calls made), as visible text."""
    r = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    html = re.sub(r"<script.*?</script>|<style.*?</style>", " ", r.stdout, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_the_ui_on_the_chosen_port_shows_the_folders_run(chosen_port_server, tmp_path):
    url, env = chosen_port_server
    assert not url.endswith(":4200")
    assert json.loads(get(f"{url}/ui-settings")[1])["api_url"] == f"{url}/api"  # the UI calls this server
    folder = make_folder(tmp_path, "ui-clip", frames=5, size=64)
    r = subprocess.run(
        [sys.executable, "-m", "scailflow.cli", "run", str(folder), "--model", "tiny-random", "--steps", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    (run,) = api(url, "/flow_runs/filter", {"flow_runs": {"name": {"any_": ["ui-clip"]}}})
    for attempt in range(3):  # a busy machine may need a second look
        text = rendered_text(f"{url}/runs/flow-run/{run['id']}", tmp_path / f"profile{attempt}")
        if "ui-clip" in text and "Completed" in text:
            break
    assert "Can't connect" not in text, text[:500]
    assert "ui-clip" in text and "Completed" in text and "Task runs" in text, text[:1000]
