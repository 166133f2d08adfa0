"""Runs you can trust, as a user runs them (`scailflow run` processes): a re-run never hands back another
settings' or another folder's video, every generation is kept as a take, `--rerun`, `--new-seed`, seed -1 and
`scailflow status`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scailflow.files import write_text_atomic
from scailflow.media import probe_video
from tests.support.folders import make_folder

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("report_to_shared_server")]  # runs report to one server

SMALL = ("--model", "tiny-random", "--steps", "1", "--target_h", "32", "--target_w", "32")


def scailflow(*args, home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, SCAILFLOW_HOME=str(home))
    r = subprocess.run(
        [sys.executable, "-m", "scailflow.cli", *map(str, args)], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


def states(stdout: str, folder: str) -> dict[str, str]:
    """The stage states `scailflow run` printed for a folder: {"pose": "Cached", ...}."""
    line = next(ln for ln in stdout.splitlines() if ln.startswith(f"{folder}: "))
    return dict(re.findall(r"(pose|masks|prompt|generate) (\w+)", line.split("[", 1)[1]))


def seed_of(stdout: str) -> int:
    return int(re.search(r"; seed (\d+);", stdout).group(1))


@pytest.mark.slow
def test_folders_sharing_out_never_serve_each_others_video(tmp_path):
    """The issue's reproduction: `for x in A B A; do scailflow run $x --out OUT; done` (A: 17 frames, B: 9)."""
    a = make_folder(tmp_path, "A", frames=17, size=64)
    b = make_folder(tmp_path, "B", frames=9, size=64)
    out, home = tmp_path / "OUT", tmp_path / "home"
    scailflow("run", a, "--out", out, *SMALL, home=home)
    assert probe_video(out / "output.mp4").frames == 17
    scailflow("run", b, "--out", out, *SMALL, home=home)
    assert probe_video(out / "output.mp4").frames == 9
    r = scailflow("run", a, "--out", out, *SMALL, home=home)
    assert probe_video(out / "output.mp4").frames == 17  # A's video, not B's
    assert probe_video(out / "rendered_v2.mp4").frames == 17
    got = states(r.stdout, "A")
    assert got["pose"] == "Completed" and got["masks"] == "Completed"  # B's files were there: made again for A
    # generation may be answered from A's own take: it is still there, byte for byte what A's key produced
    takes = sorted(p.name for p in (out / "takes").glob("*.mp4"))
    assert len(takes) == 2, takes


@pytest.mark.slow
def test_takes_new_seed_rerun_and_status(tmp_path):
    folder = make_folder(tmp_path, "clip", frames=5, size=64)
    write_text_atomic(folder / "job.yaml", "sampling: {seed: -1}\n")  # random, recorded
    home = tmp_path / "home"
    out = folder / "scailflow"

    first = scailflow("run", folder, *SMALL, home=home)
    seed1 = seed_of(first.stdout)
    take1 = Path(json.loads((out / "run.json").read_text())["take"])
    assert take1.parent == out / "takes" and take1.name.startswith("quality-32x32-")
    assert take1.name.endswith(f"-seed{seed1}.mp4")  # the drawn seed, recorded in the name
    again = scailflow("run", folder, *SMALL, home=home)  # unchanged: the cached take, the recorded seed
    assert set(states(again.stdout, "clip").values()) == {"Cached"} and seed_of(again.stdout) == seed1

    rolled = scailflow("run", folder, *SMALL, "--new-seed", home=home)  # another process, a fresh draw
    seed2 = seed_of(rolled.stdout)
    assert states(rolled.stdout, "clip")["generate"] == "Completed" and seed2 != seed1
    newest = Path(json.loads((out / "run.json").read_text())["take"])
    assert newest.name == take1.name.replace(f"-seed{seed1}.mp4", f"-seed{seed2}.mp4")
    assert sorted((out / "takes").glob("*.mp4")) == sorted([take1, newest])  # both takes kept
    assert (out / "output.mp4").read_bytes() == newest.read_bytes()  # output.mp4 = the latest take
    record = json.loads((out / "output.mp4.json").read_text())
    assert record["seed"] == seed2 and record["sampling"]["seed"] == seed2

    later = scailflow("run", folder, *SMALL, home=home)  # the re-rolled take is now what these settings give
    assert states(later.stdout, "clip")["generate"] == "Cached" and seed_of(later.stdout) == seed2

    forced = scailflow("run", folder, *SMALL, "--rerun", "pose", "--rerun", "prompt", home=home)
    got = states(forced.stdout, "clip")
    assert got["pose"] == "Completed" and got["prompt"] == "Completed" and got["masks"] == "Cached"
    assert got["generate"] == "Cached"  # what generation reads did not change

    status = scailflow("status", folder, home=home).stdout
    assert "clip: Completed" in status and "takes (2" in status
    assert f"* {newest.name}" in status
    assert re.search(r"pose\s+Completed\s+\d+\.\d+ s", status)
    recent = scailflow("status", "--last", "3", home=home).stdout
    assert recent.count(" clip ") == 3 and "Completed" in recent


def test_seed_minus_one_differs_between_processes(tmp_path):
    """`scailflow generate --base_seed -1` twice: two processes, two seeds (the draw is the OS's, not torch's global
    RNG, which building the model seeds the same way in every process)."""
    from tests.support.folders import official_args, write_prepared

    d = write_prepared(tmp_path)
    seeds = []
    for n in range(2):
        args = official_args(d, **{"--save_file": d / f"out{n}.mp4"})
        scailflow("generate", *args, *SMALL, "--base_seed", "-1", home=tmp_path / "home")
        seeds.append(json.loads((d / f"out{n}.mp4.json").read_text())["seed"])
    assert seeds[0] != seeds[1], seeds
