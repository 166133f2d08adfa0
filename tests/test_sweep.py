"""`scailflow sweep`: the grid of takes (seeds fastest), one labelled contact sheet, resumed from the cached takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from scailflow.flows.sweep import cells, label, parse_values
from scailflow.media import probe_video, read_video


def test_grid_and_labels():
    values = {"preset": parse_values("preset", "fast,comfy"), "pose_strength": parse_values("p", "0.5,1")}
    grid = cells(values, [1, 2])
    assert len(grid) == 8 and grid[0] == {"preset": "fast", "pose_strength": 0.5, "seed": 1}
    assert grid[1]["seed"] == 2 and label(grid[0]) == "preset=fast pose_strength=0.5 seed=1"
    assert parse_values("steps", "4,8") == [4, 8]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.usefixtures("report_to_shared_server")
def test_sweep_writes_takes_and_a_sheet_and_resumes(tmp_path):
    from tests.support.folders import make_folder

    folder = make_folder(tmp_path, "clip", frames=5, size=64)
    env = dict(os.environ, SCAILFLOW_HOME=str(tmp_path / "home"))
    cmd = [sys.executable, "-m", "scailflow.cli", "sweep", str(folder), "--model", "tiny-random"]
    cmd += ["--steps", "1", "--pose_strength", "1,0.5"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    out = folder / "scailflow"
    sweep = json.loads((out / "sweep.json").read_text())
    assert [c["label"] for c in sweep["cells"]] == [
        "steps=1 pose_strength=1 seed=1",
        "steps=1 pose_strength=0.5 seed=1",
    ]
    takes = [c["take"] for c in sweep["cells"]]
    assert len(set(takes)) == 2 and all(os.path.isfile(t) for t in takes)
    sheet = probe_video(out / "sweep.mp4")
    one = probe_video(takes[0])
    assert (sheet.width, sheet.height, sheet.frames) == (2 * one.width, one.height, one.frames)  # side by side
    assert read_video(takes[0])[0].tolist() != read_video(takes[1])[0].tolist()  # the swept setting changed the take
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and again.stdout.count("(Cached)") == 2  # resumed: every take from its cache
