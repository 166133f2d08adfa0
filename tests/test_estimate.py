"""`scailflow estimate`: predictions from the measured tables (checked against the benchmark's own figures) and from
this machine's history of real runs, the GPU-minute budget refusal, and the replay of past predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scailflow.flows.estimate import forward_flops, tokens, work
from scailflow.media import write_image, write_video

RESULTS = Path(__file__).parents[1] / "bench" / "results"


def folder(root: Path, frames: int) -> Path:
    d = root / "clip"
    d.mkdir()
    write_image(d / "ref.png", np.full((64, 112, 3), 200, np.uint8))  # landscape: no swap of a 512x896 target
    write_video(d / "driving.mp4", np.zeros((frames, 64, 112, 3), np.uint8), 16)
    return d


def cli(*args, home: Path):
    env = dict(os.environ, SCAILFLOW_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "scailflow.cli", *map(str, args)], env=env, capture_output=True, text=True, timeout=600
    )


def test_work_model_matches_the_measured_sizes():
    assert tokens(81, 512, 896) == 48832 and tokens(81, 704, 1280) == 95920
    sizes = json.loads((RESULTS / "h200-2026-12-01" / "dit.json").read_text())["sizes"]
    eager = {s["size"]: next(v for v in s["variants"] if v["variant"] == "eager")["s_per_forward"] for s in sizes}
    measured = eager["704x1280"] / eager["896x512"]
    predicted = forward_flops(tokens(81, 704, 1280)) / forward_flops(tokens(81, 512, 896))
    assert abs(predicted / measured - 1) < 0.02
    assert work([{"length": 81}], 512, 896, 40, True) == 80  # 40 steps with CFG at the table's size


@pytest.mark.integration
def test_estimate_answers_without_torch(tmp_path):
    """The prediction is arithmetic on the folder's sizes: `scailflow estimate` (and so `--dry-run`) loads neither
    torch nor Prefect (it took ~4 s of CPU when the size rules came with torch, ~0.4 s without)."""
    d = folder(tmp_path, 5)
    code = (
        "import sys; from scailflow.cli import main; code = main(['estimate', sys.argv[1], '--gpu', 'h100']); "
        "print([m for m in ('torch', 'torchvision', 'prefect', 'diffusers') if m in sys.modules]); sys.exit(code)"
    )
    env = dict(os.environ, SCAILFLOW_HOME=str(tmp_path / "home"))
    r = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and "GPU-minutes" in r.stdout, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "[]", r.stdout


def test_table_prediction_reproduces_the_benchmark(tmp_path):
    d = folder(tmp_path, 81)
    measured = json.loads((RESULTS / "h200-2026-12-01" / "presets.json").read_text())["rows"]
    fast = {r["preset"]: r["clip_s"] for r in measured if "clip_s" in r and not r.get("capped")}
    flags = ["--gpu", "h200", "--fp8", "--fp8_attention", "--compile", "--target_h", "512", "--target_w", "896"]
    for preset in ("quality", "fast"):
        r = cli("estimate", d, *flags, "--preset", preset, "--gpu-price", "3", home=tmp_path / "home")
        assert r.returncode == 0, r.stderr
        line = r.stdout.splitlines()[0]
        generate = float(line.split("generate ")[1].split(" s")[0])
        assert abs(generate / fast[preset] - 1) < 0.05, (line, fast[preset])
        minutes = float(line.split("; ")[1].split(" GPU-minutes")[0])
        cost = float(line.split("$")[1].split(" ")[0])
        assert abs(cost - minutes / 60 * 3) < 0.01
        assert "measured table (bench/results/h200-2026-12-01/presets.json), H200" in line


def test_budget_refusal_and_unknown_gpu_are_one_line(tmp_path):
    d = folder(tmp_path, 81)
    r = cli("estimate", d, "--gpu", "h100", "--max-gpu-minutes", "1", home=tmp_path / "home")
    assert r.returncode == 3 and r.stderr.count("\n") == 1 and "over --max-gpu-minutes 1" in r.stderr
    r = cli("estimate", d, "--device", "cpu", home=tmp_path / "home")  # no H100/H200 here, no history
    if "H100" not in r.stdout and "H200" not in r.stdout:
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "give --gpu h100|h200" in r.stderr


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.usefixtures("report_to_shared_server")
def test_history_of_real_runs_drives_the_prediction(tmp_path):
    from tests.support.folders import make_folder

    d = make_folder(tmp_path, "clip", frames=5, size=64)  # a photo with a person: the masks stage finds them
    home = tmp_path / "home"
    small = ("--model", "tiny-random", "--target_h", "32", "--target_w", "32", "--guidance", "1")
    for steps in ("1", "3"):
        r = cli("run", d, *small, "--steps", steps, home=home)
        assert r.returncode == 0, r.stderr[-2000:]
    r = cli("estimate", d, *small, "--steps", "2", "--check", home=home)
    assert r.returncode == 0, r.stderr
    line, check = r.stdout.splitlines()[:2]
    assert "[this machine's last 2 tiny-random run(s)]" in line
    records = [json.loads(p.read_text()) for p in sorted((d / "scailflow" / "takes").glob("*.mp4.json"))]
    # two runs of one clip: each part of their stage clock at its median rate (the DiT's per unit of work)
    dit = [rec["timings"]["denoise"] for rec in records]
    vae = [sum(rec["timings"][k] for k in ("driving", "decode", "write")) for rec in records]
    rest = [rec["seconds"] - d - v for rec, d, v in zip(records, dit, vae)]
    units = [work(rec["segments"], 32, 32, rec["sampling"]["steps"], False) for rec in records]
    expected = sum(d / u for d, u in zip(dit, units)) / 2 * work([{"length": 5}], 32, 32, 2, False)
    expected += sum(vae) / 2 + sum(rest) / 2
    predicted = float(line.split("generate ")[1].split(" s")[0])
    assert abs(predicted - expected) < 0.6  # the line rounds to whole seconds
    assert check.startswith("history: 1 run(s) predicted from the runs before them: median error ")
    # every run records what was predicted for it (from the runs before it) beside its actual time
    second = json.loads((d / "scailflow" / "run.json").read_text())["estimate"]
    assert second["from_runs"] == 1 and second["predicted_generate_s"] > 0
    assert second["actual_generate_s"] == max(records, key=lambda r: r["sampling"]["steps"])["seconds"]
