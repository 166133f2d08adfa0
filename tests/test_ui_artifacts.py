"""What the Prefect UI shows of a run, read back from a real `scailflow server` with Prefect's client: a progress
artifact that moves while the folder runs, a result a person can judge (the output and the masks over the driving
video as animations, a wide masks sheet, absolute paths, seconds per stage); and Ctrl-C on `serve` / `server`."""

from __future__ import annotations

import base64
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from scailflow.masks import read_mask_video
from scailflow.masks.sheet import _overlay
from scailflow.media import read_video
from tests.support.folders import make_folder
from tests.support.processes import Process, free_port, healthy, wait_until
from tests.test_terminal import NOISE, STAGE_LINE

pytestmark = pytest.mark.integration  # starts processes/servers/full flows


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


def artifacts(url: str, *keys: str) -> list:
    """The artifacts under `keys`, newest first, through Prefect's client (its typed reader sends null run filters,
    which this server refuses, and an empty one matches nothing: the client posts the artifact filter alone)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import Artifact
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from pydantic import TypeAdapter

    with temporary_settings({PREFECT_API_URL: f"{url}/api"}), get_client(sync_client=True) as client:
        body = {"artifacts": {"key": {"any_": list(keys)}}, "sort": "CREATED_DESC", "limit": 20, "offset": 0}
        response = client.request("POST", "/artifacts/filter", json=body)
    response.raise_for_status()
    return TypeAdapter(list[Artifact]).validate_python(response.json())


def decode(uri_b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri_b64)))


def frames_of(im: Image.Image) -> list[np.ndarray]:
    out = []
    for i in range(im.n_frames):
        im.seek(i)
        out.append(np.asarray(im.convert("RGB"), dtype=np.float32))
    return out


def test_progress_moves_and_the_result_can_be_judged(server, tmp_path):
    url, env = server
    folder = make_folder(tmp_path, "judge", frames=13, size=128)
    seen: list[float] = []
    done = threading.Event()

    def watch() -> None:  # what the UI's progress bar shows, polled while the run goes on
        while not done.is_set():
            try:
                found = [a for a in artifacts(url, "scailflow-judge-progress") if a.type == "progress"]
                if found and (not seen or seen[-1] != float(found[0].data)):
                    seen.append(float(found[0].data))
            except Exception:  # noqa: BLE001 - the artifact may not exist yet
                pass
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    r = subprocess.run(
        [sys.executable, "-m", "scailflow.cli", "run", str(folder), "--model", "tiny-random", "--steps", "30"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    done.set()
    watcher.join()
    assert r.returncode == 0, r.stderr[-3000:]

    # progress: one artifact for the folder, moved step by step to 100%
    progress = [a for a in artifacts(url, "scailflow-judge-progress") if a.type == "progress"][0]
    assert float(progress.data) == 100.0 and "done in" in progress.description
    assert seen == sorted(seen), seen  # never goes back
    # generation's steps moved it several times (polled over HTTP every 0.1 s: a loaded machine sees fewer)
    assert len([p for p in seen if 15 < p < 100]) >= 2, seen

    # the result: absolute paths with file links, seconds per stage
    result = [a for a in artifacts(url, "scailflow-judge") if a.type == "markdown"][0]
    md = result.data
    video = (folder / "scailflow" / "output.mp4").resolve()
    assert f"[{video}]({video.as_uri()})" in md
    for stage in ("pose", "masks", "prompt", "generate"):
        assert re.search(rf"^\| {stage} \| Completed \| \d+(\.\d+)? \|$", md, re.M), stage

    # two animations: the output, and the masks over the raw driving video; each small enough for the database
    webps = re.findall(r"\(data:image/webp;base64,([A-Za-z0-9+/=]+)\)", md)
    assert len(webps) == 2
    output, overlay = (decode(w) for w in webps)
    assert all(len(base64.b64decode(w)) < 300_000 for w in webps)
    assert output.format == "WEBP" and output.is_animated and output.n_frames == 13 and output.size == (64, 64)
    real, _ = read_video(video)
    assert np.abs(frames_of(output)[6] - real[6]).mean() < 25  # it is this video (lossy), not another
    assert overlay.is_animated and overlay.n_frames == 13 and overlay.size == (128, 128)
    driving, _ = read_video(folder / "driving.mp4")
    masks = read_mask_video(folder / "scailflow" / "rendered_mask_v2.mp4")
    assert np.abs(frames_of(overlay)[6] - _overlay(driving[6], masks[6])).mean() < 12

    # the masks sheet: wide, tiles 256 px (reference + 4 frames across; rows picture, mask, overlay)
    (sheet_b64,) = re.findall(r"\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", md)
    sheet = decode(sheet_b64)
    assert sheet.size == (5 * 256 + 4 * 4, 3 * 256)


def _children(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux /proc)."""
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(k) for k in f.read().split()]
        except OSError:
            continue
    return kids


@pytest.mark.slow
def test_a_scheduled_run_prints_like_a_batch_and_ctrl_c_on_serve_is_one_line(server, tmp_path):
    url, env = server
    (tmp_path / "clips").mkdir()
    make_folder(tmp_path / "clips", "a", frames=5, size=64)
    (tmp_path / "pipelines.yaml").write_text(
        "model: {model: tiny-random}\npipelines:\n  - name: nightly\n    root: clips\n"
        "    options: {sampling: {steps: 2, target_h: 32, target_w: 32}}\n"
        "    schedule: {interval_seconds: 3600}\n"
    )
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with Process(["serve", tmp_path / "pipelines.yaml"], env=env, merge=False) as serve:
        out, err = serve.out, serve.err
        serve.wait_for("serving 1 scheduled pipeline(s): nightly (every 3600 s)")

        def deployment():  # `serve` registers its deployments right after saying it serves them
            try:
                return client.read_deployment_by_name("scailflow-batch/nightly")
            except ObjectNotFound:
                return None

        # a run of the schedule, started now: Prefect's runner executes it in a process of its own
        with temporary_settings({PREFECT_API_URL: f"{url}/api"}), get_client(sync_client=True) as client:
            found = wait_until(deployment, 120, lambda: "".join(out + err), every=0.5, alive=serve.proc)
            flow_run = client.create_flow_run_from_deployment(found.id)
            serve.wait_for("batch: 1 of 1 folders done", stream="err")
            wait_until(
                lambda: client.read_flow_run(flow_run.id).state.is_final(), 120, lambda: "".join(err[-30:]), every=0.5
            )
        # the idle server is what this Ctrl-C is about: wait until the runner's process for that run has exited
        wait_until(lambda: not _children(serve.pid), 120, lambda: str(_children(serve.pid)), every=0.5)
        ran = [ln.rstrip("\n") for ln in err if ln.strip()]
        assert "[a] generate: wrote " in "\n".join(ran)
        assert all(STAGE_LINE.match(ln) for ln in ran), [ln for ln in ran if not STAGE_LINE.match(ln)]
        for noise in NOISE:
            assert noise not in "".join(out + err), noise

        before = len(err)
        serve.signal_group(signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        assert serve.finish(timeout=60) == 130
    assert [ln.strip() for ln in err[before:] if ln.strip()] == [
        "stopped serving: the schedules are paused until `scailflow serve` runs again"
    ], err[before:]
    assert "Traceback" not in "".join(out + err)
    with temporary_settings({PREFECT_API_URL: f"{url}/api"}), get_client(sync_client=True) as client:
        assert client.read_deployment_by_name("scailflow-batch/nightly").paused  # what the line says is true


def test_ctrl_c_on_server_ends_with_one_line(tmp_path):
    port = free_port()
    env = dict(os.environ, SCAILFLOW_HOME=str(tmp_path / "home"), SCAILFLOW_PORT=str(port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "scailflow.cli", "server", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_until(lambda: healthy(f"http://127.0.0.1:{port}"), 120, "the server did not come up", alive=proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: stopped by SIGINT") and "server is stopped" in lines[0], err
    assert out.splitlines()[0].startswith(f"Prefect UI and API on http://127.0.0.1:{port}")
    assert "Traceback" not in out and "prefect config set" not in out
