"""`scailflow sweep`: the grid of takes (seeds fastest), LoRA strengths swept (each strength reloads the model with the
LoRAs merged at it; going back to a strength gives its take bit for bit), one labelled contact sheet and a table in
the Prefect UI, a sweep declared in pipelines.yaml and run by `batch`, and the estimate of a sweep (per take, the
preprocessing counted once), resumed from the cached takes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from scailflow.errors import InputError
from scailflow.files import write_text_atomic
from scailflow.flows.sweep_options import SweepOptions, cells, label, parse_values
from scailflow.media import probe_video, read_video

SMALL = {"sampling": {"steps": 1, "target_h": 32, "target_w": 32}}


def test_grid_and_labels():
    values = {"preset": parse_values("preset", "fast,comfy"), "pose_strength": parse_values("pose_strength", "0.5,1")}
    grid = cells(values, [1, 2])
    assert len(grid) == 8 and grid[0] == {"preset": "fast", "pose_strength": 0.5, "seed": 1}
    assert grid[1]["seed"] == 2 and label(grid[0]) == "preset=fast pose_strength=0.5 seed=1"
    assert label(grid[0], {"preset": ["fast"], "pose_strength": [0.5, 1.0]}) == "pose_strength=0.5 seed=1"
    assert parse_values("steps", "4,8") == [4, 8]


def test_sweep_options_from_flags_and_yaml_alike():
    flags = SweepOptions.model_validate({"seeds": 2, "lora_alpha": "0.6,0.8:1", "guidance": "3,5", "preset": "fast"})
    yaml = SweepOptions.model_validate(
        {"seeds": 2, "lora_alpha": [0.6, [0.8, 1]], "guidance": [3, 5], "preset": "fast"}
    )
    assert flags == yaml and flags.cell_count == 8
    assert list(flags.values()) == ["lora_alpha", "preset", "guidance"]  # LoRA strengths vary slowest
    assert label(cells(flags.values(), [1])[1]) == "lora_alpha=0.6 preset=fast guidance=5 seed=1"
    assert label(cells(flags.values(), [1])[2]) == "lora_alpha=0.8:1 preset=fast guidance=3 seed=1"
    for bad, words in (
        ({"guidance": "3,-1"}, "-1.0: Input should be greater than or equal to 0"),
        ({"steps": "4,4"}, "4 is given twice"),
        ({"preset": "fast,nope"}, "Input should be"),
        ({"seeds": 0}, "greater than or equal to 1"),
    ):
        with pytest.raises(Exception, match=words):
            SweepOptions.model_validate(bad)


def test_a_lora_sweep_needs_loras_and_one_strength_per_lora():
    from scailflow.flows.sweep_options import cell_model
    from scailflow.scail.options import ModelOptions

    with pytest.raises(InputError, match="give them with --lora_path"):
        cell_model(ModelOptions(), {"lora_alpha": 0.5, "seed": 1})
    two = ModelOptions(lora_path=["a", "b"])
    assert cell_model(two, {"lora_alpha": 0.5, "seed": 1}).loras() == [("a", 0.5), ("b", 0.5)]
    assert cell_model(two, {"lora_alpha": [0.8, 1.0], "seed": 1}).loras() == [("a", 0.8), ("b", 1.0)]
    with pytest.raises(InputError, match="one strength per LoRA"):
        cell_model(two, {"lora_alpha": [0.8, 1.0, 1.0], "seed": 1})


def test_pipelines_yaml_declares_a_sweep_and_its_errors_name_the_line(tmp_path):
    from scailflow.flows.config import load_pipelines

    path = tmp_path / "pipelines.yaml"
    text = "pipelines:\n  - name: look\n    folders: [a]\n    sweep:\n      seeds: 2\n      guidance: [3, 5]\n"
    write_text_atomic(path, text)
    (entry,) = load_pipelines(path).pipelines
    assert entry.sweep.seeds == 2 and entry.sweep.values() == {"guidance": [3.0, 5.0]}
    write_text_atomic(path, text.replace("[3, 5]", "[3, -5]"))
    with pytest.raises(InputError) as e:
        load_pipelines(path)
    assert str(e.value).startswith(f"{path}:6: pipelines.0.sweep.guidance: -5.0: ")
    write_text_atomic(path, text.replace("seeds: 2", "seed: 2"))
    with pytest.raises(InputError, match=rf"{path}:5: pipelines.0.sweep.seed: unknown key"):
        load_pipelines(path)


def clip(root: Path) -> Path:
    import numpy as np

    from scailflow.media import write_image, write_video

    d = root / "clip"
    d.mkdir()
    write_image(d / "ref.png", np.full((64, 112, 3), 200, np.uint8))
    write_video(d / "driving.mp4", np.zeros((81, 64, 112, 3), np.uint8), 16)
    return d


def test_estimate_of_a_sweep_counts_the_preprocessing_once(tmp_path, capsys, monkeypatch):
    from scailflow.cli import main
    from scailflow.flows.estimate import History, plan
    from scailflow.scail.options import ModelOptions, SamplingOptions

    d = clip(tmp_path)
    history = History(stages={"pose": [20.0], "masks": [30.0], "prompt": [10.0]})
    sweep = SweepOptions(seeds=2, guidance=[3, 5], preset=["quality", "fast"])
    one = plan([(str(d), SamplingOptions())], ModelOptions(), "h200", history=history)
    swept = plan([(str(d), SamplingOptions(), sweep)], ModelOptions(), "h200", 3.0, history)
    assert len(swept.estimates) == 8 and len(swept.lines) == 1 + 8 + 1
    assert swept.lines[0].startswith("clip: sweep of 8 takes (2 preset x 2 guidance x 2 seed(s))")
    assert "preprocessing once 60 s (pose 20 s, masks 30 s, prompt 10 s)" in swept.lines[0]
    generate = [e.stages["generate"] for e in swept.estimates]
    assert generate[0] == pytest.approx(one.estimates[0].stages["generate"])  # quality, CFG 3: as a run's
    assert generate[4] < generate[0] / 4  # fast: 8 steps against 40
    assert swept.seconds == pytest.approx(60 + sum(generate))  # the preprocessing once, not 8 times
    assert swept.lines[1].startswith("  preset=quality guidance=3 seed=1: generate ")
    assert swept.lines[-1].startswith(f"  sweep total: {swept.seconds:.0f} s, {swept.gpu_minutes:.1f} GPU-minutes, $")

    # `sweep --dry-run` and `estimate --sweep` print the same, and run nothing
    monkeypatch.setenv("SCAILFLOW_HOME", str(tmp_path / "home"))
    args = ["--gpu", "h200", "--gpu-price", "3"]
    assert main(["sweep", str(d), "--dry-run", "--seeds", "2", "--guidance", "3,5", *args]) == 0
    dry = capsys.readouterr().out
    assert main(["estimate", str(d), "--sweep", "seeds=2", "--sweep", "guidance=3,5", *args]) == 0
    assert capsys.readouterr().out == dry and dry.count("\n") == 1 + 4 + 1
    assert not (d / "scailflow").exists()
    assert main(["sweep", str(d), "--dry-run", "--guidance", "3,5", "--max-gpu-minutes", "1", *args]) == 3


def test_batch_dry_run_and_estimate_of_pipelines_yaml_cover_its_sweep(tmp_path, capsys, monkeypatch):
    from scailflow.cli import main
    from scailflow.flows.cli import _batch_sampling
    from scailflow.flows.estimate import plan

    monkeypatch.setenv("SCAILFLOW_HOME", str(tmp_path / "home"))  # no history: both read the same
    clip(tmp_path)
    path = tmp_path / "pipelines.yaml"
    write_text_atomic(path, "pipelines:\n  - name: look\n    folders: [clip]\n    sweep: {seeds: 3}\n")
    folders, model, left_out = _batch_sampling(Namespace(pipelines=str(path), pipeline=None))
    assert left_out == [] and folders[0][2] == SweepOptions(seeds=3)
    lines = plan(folders, model, "h100").lines
    assert lines[0].startswith("clip: sweep of 3 takes (3 seed(s))") and len(lines) == 5
    assert main(["estimate", str(path), "--gpu", "h100"]) == 0
    assert capsys.readouterr().out.splitlines() == lines


# ------------------------------------------------------------------------------------- flows, on the tiny model
def take_bytes(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def table(key: str) -> list[dict]:
    """The newest table artifact under `key`, read back through Prefect's client."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC, limit=1
        )
    assert found and found[0].type == "table"
    data = found[0].data
    return json.loads(data) if isinstance(data, str) else data


@pytest.mark.integration
def test_lora_strength_sweep_reloads_the_model_and_shows_a_table(tmp_path, prefect_harness):
    from scailflow.flows.folder_flow import folder_flow
    from scailflow.flows.sweep import sweep_flow
    from tests.support.folders import make_folder
    from tests.test_scail_lora import random_lora, write_format

    folder = make_folder(tmp_path, "clip", frames=5, size=64)
    lora = write_format(tmp_path / "style.safetensors", "lightx2v", random_lora(1))
    model = {"model": "tiny-random", "lora_path": [str(lora)]}
    result = sweep_flow(str(folder), {"lora_alpha": "0.5,2"}, "clip", overrides=SMALL, model=model)

    first, second = result["cells"]
    assert (first["label"], second["label"]) == ("lora_alpha=0.5 seed=1", "lora_alpha=2 seed=1")
    assert first["take"] != second["take"]
    records = [json.loads(Path(c["take"] + ".json").read_text()) for c in result["cells"]]
    assert [r["loras"][0]["alpha"] for r in records] == [0.5, 2.0]  # each take made with its strength merged
    assert read_video(first["take"])[0].tolist() != read_video(second["take"])[0].tolist()
    sheet, one = probe_video(result["sheet"]), probe_video(first["take"])
    assert (sheet.width, sheet.height) == (2 * one.width, one.height) and Path(result["still"]).is_file()

    # back to the first strength after the second was loaded: generated again, the same take bit for bit
    before = take_bytes(first["take"])
    again = folder_flow(
        str(folder),
        folder_name="clip",
        overrides={"sampling": SMALL["sampling"] | {"seed": 1}},
        model=model | {"lora_alpha": [0.5]},
        run={"rerun": ["generate"]},
    )
    assert again["states"]["generate"] == "Completed" and again["take"] == first["take"]
    assert take_bytes(again["take"]) == before

    rows = table("scailflow-sweep-clip")
    assert [(r["settings"], r["seed"], r["take"], r["state"]) for r in rows] == [
        ("lora_alpha=0.5", 1, Path(first["take"]).name, "Completed"),
        ("lora_alpha=2", 1, Path(second["take"]).name, "Completed"),
    ]
    assert all(isinstance(r["seconds"], float) and r["seconds"] > 0 for r in rows)


@pytest.mark.integration
def test_batch_runs_the_sweep_a_pipeline_declares(tmp_path, prefect_harness):
    from scailflow.flows.batch_flow import run_batch
    from tests.support.folders import make_folder

    (tmp_path / "clips").mkdir()
    make_folder(tmp_path / "clips", "a", frames=5, size=64)
    path = tmp_path / "pipelines.yaml"
    write_text_atomic(
        path,
        "model: {model: tiny-random}\n"
        "defaults: {sampling: {steps: 1, target_h: 32, target_w: 32}}\n"
        "pipelines:\n  - name: looks\n    root: clips\n    out: results\n    sweep: {seeds: 2}\n",
    )
    results, state = run_batch(str(path), "looks")
    assert state == "Completed"
    (summary,) = results.values()
    sweep = json.loads((tmp_path / "results" / "a" / "sweep.json").read_text())
    assert summary["video"] == sweep["sheet"] and Path(sweep["sheet"]).is_file()
    assert [c["label"] for c in sweep["cells"]] == ["seed=1", "seed=2"]
    rows = table("scailflow-batch-looks")
    assert rows[0]["folder"] == "a" and rows[0]["video"].endswith("sweep.mp4")
    assert [r["seed"] for r in table("scailflow-sweep-a")] == [1, 2]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.usefixtures("report_to_shared_server")
def test_sweep_command_writes_takes_and_a_sheet_and_resumes(tmp_path):
    from tests.support.folders import make_folder

    folder = make_folder(tmp_path, "clip", frames=5, size=64)
    env = dict(os.environ, SCAILFLOW_HOME=str(tmp_path / "home"))
    cmd = [sys.executable, "-m", "scailflow.cli", "sweep", str(folder), "--model", "tiny-random"]
    cmd += ["--steps", "1", "--target_h", "32", "--target_w", "32", "--pose_strength", "1,0.5"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    out = folder / "scailflow"
    sweep = json.loads((out / "sweep.json").read_text())
    assert [c["label"] for c in sweep["cells"]] == ["pose_strength=1 seed=1", "pose_strength=0.5 seed=1"]
    takes = [c["take"] for c in sweep["cells"]]
    assert len(set(takes)) == 2 and all(os.path.isfile(t) for t in takes)
    sheet = probe_video(out / "sweep.mp4")
    one = probe_video(takes[0])
    assert (sheet.width, sheet.height, sheet.frames) == (2 * one.width, one.height, one.frames)  # side by side
    assert read_video(takes[0])[0].tolist() != read_video(takes[1])[0].tolist()  # the swept setting changed the take
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and (again.stdout + again.stderr).count("(Cached)") == 2  # resumed from the cache
