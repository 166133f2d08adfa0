"""`scailflow server`: the Prefect server and UI on 127.0.0.1; `scailflow run` finds it and its runs show there."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scailflow.files import write_text_atomic
from scailflow.media import probe_video
from tests.support.folders import make_folder
from tests.support.processes import Process, get, scailflow_server, wait_until
from tests.support.system import need

pytestmark = pytest.mark.integration  # starts processes/servers/full flows


def test_server_ui_and_a_run_reported_to_it(shared_server, tmp_path):
    url, env = shared_server
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


@pytest.mark.slow
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
    batch = None
    try:
        with scailflow_server(home) as (url, env):
            batch = Process(["batch", tmp_path / "pipelines.yaml"], env=env)
            batch.wait_for("follow it in the Prefect UI", 120)  # the batch's flow run has begun
            batch.wait_for(re.compile(r"^\[[abc]\] (pose|masks|prompt|generate): "), 120)  # its folders are at work
        # the server is gone (the context stopped it) while the batch works
        code = batch.finish(timeout=120)
    finally:
        if batch is not None:
            batch.kill()
    output = batch.text()
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
def api(url: str, path: str, body: dict) -> list[dict]:
    return json.loads(get(f"{url}/api{path}", body)[1])


@pytest.mark.slow
def test_a_scheduled_pipeline_fires_and_completes(shared_server, tmp_path):
    """`scailflow serve` with a short interval: the server's scheduler creates runs, one completes with its video,
    and Prefect's own CLI lists runs and artifacts (no 422)."""
    url, env = shared_server
    clips = tmp_path / "clips"
    clips.mkdir()
    make_folder(clips, "nightly-clip", frames=5, size=64)
    write_text_atomic(
        tmp_path / "pipelines.yaml",
        "model: {model: tiny-random}\npipelines:\n  - name: every-few-seconds\n    root: clips\n"
        "    options: {sampling: {steps: 1, target_h: 32, target_w: 32}}\n    schedule: {interval_seconds: 30}\n",
    )  # every 5 s started a process per run faster than a loaded machine ended them (58 at once, seen): 30 s
    serve = Process(["serve", tmp_path / "pipelines.yaml"], env=env)
    try:
        video = clips / "nightly-clip" / "scailflow" / "output.mp4"

        def completed() -> list[dict]:  # a run that found the folder busy (the previous one) skips it
            runs = api(url, "/flow_runs/filter", {"flow_runs": {"name": {"any_": ["batch-every-few-seconds"]}}})
            done = [r for r in runs if r["deployment_id"] and r["state"]["type"] == "COMPLETED"]
            return done if video.is_file() else []

        done = wait_until(
            completed,
            420,
            lambda: "no scheduled run completed:\n" + "".join(serve.lines[-30:]),
            every=1,
            alive=serve.proc,
        )
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
        serve.signal_group(signal.SIGTERM)
        try:
            serve.finish(timeout=60)
        finally:
            serve.kill()


@pytest.fixture(scope="session")
def browser() -> str:
    """Headless chromium; listed before the server fixture, so without it the test skips before starting anything."""
    return need("chromium", "chromium", "chromium-browser", "google-chrome")


def rendered_text(browser: str, url: str, profile: Path) -> str:
    """The page as headless Chromium renders it (scripts run, API calls made), as visible text."""
    r = subprocess.run(
        [
            browser,
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


def test_the_ui_on_the_chosen_port_shows_the_folders_run(browser, shared_server, tmp_path):
    url, env = shared_server
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
        text = rendered_text(browser, f"{url}/runs/flow-run/{run['id']}", tmp_path / f"profile{attempt}")
        if "ui-clip" in text and "Completed" in text:
            break
    assert "Can't connect" not in text, text[:500]
    assert "ui-clip" in text and "Completed" in text and "Task runs" in text, text[:1000]
