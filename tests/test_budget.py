"""`--dry-run` and `--max-gpu-minutes` on `scailflow run` and `scailflow batch`: the prediction per folder and stage,
or one refusing line, before anything starts (no output folder, no Prefect run). In-process: the CLI's own `main`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scailflow.cli import main
from scailflow.media import write_image, write_video


def clip(root: Path, name: str, frames: int) -> Path:
    d = root / name
    d.mkdir()
    write_image(d / "ref.png", np.full((64, 112, 3), 200, np.uint8))
    write_video(d / "driving.mp4", np.zeros((frames, 64, 112, 3), np.uint8), 16)
    return d


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SCAILFLOW_HOME", str(tmp_path / "home"))  # no history: the measured tables
    return tmp_path / "home"


def estimate_lines(capsys, *args) -> list[str]:
    assert main(["estimate", *map(str, args)]) == 0
    return capsys.readouterr().out.splitlines()


def test_run_dry_run_prints_estimates_line_and_starts_nothing(tmp_path, home, capsys):
    d = clip(tmp_path, "clip", 81)
    flags = ("--gpu", "h100", "--gpu-price", "3", "--steps", "8", "--guidance", "1")
    assert main(["run", str(d), "--dry-run", *flags]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == estimate_lines(capsys, d, *flags)  # the same prediction as `scailflow estimate`
    assert out[0].startswith("clip: 81 frames 896x512, 1 segment(s), 8 DiT forwards: ")
    assert "(pose 0 s, masks 0 s, prompt 0 s, generate " in out[0] and "$" in out[0]
    assert sorted(p.name for p in d.iterdir()) == ["driving.mp4", "ref.png"]  # no output folder
    assert not (home / "runs.jsonl").exists()


def test_run_over_budget_is_one_line_before_anything_starts(tmp_path, home, capsys):
    d = clip(tmp_path, "clip", 81)
    assert main(["run", str(d), "--max-gpu-minutes", "1", "--gpu", "h200"]) == 3  # `estimate`'s refusal code
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("error: predicted ") and "over --max-gpu-minutes 1:" in err
    assert sorted(p.name for p in d.iterdir()) == ["driving.mp4", "ref.png"]


def test_dry_run_of_a_bad_folder_is_its_one_line(tmp_path, home, capsys):
    d = clip(tmp_path, "clip", 81)
    (d / "ref.png").write_bytes(b"not an image")
    assert main(["run", str(d), "--dry-run", "--gpu", "h100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ref.png" in err


def test_unknown_gpu_without_history_says_what_to_give(tmp_path, home, capsys):
    d = clip(tmp_path, "clip", 81)
    code = main(["run", str(d), "--dry-run", "--device", "cpu"])
    out, err = capsys.readouterr()
    if "H100" not in out and "H200" not in out:  # this machine has neither
        assert code == 2 and err.count("\n") == 1 and "give --gpu h100|h200" in err


def test_batch_dry_run_and_budget(tmp_path, home, capsys):
    (tmp_path / "clips").mkdir()
    for name, frames in (("a", 81), ("b", 161)):
        clip(tmp_path / "clips", name, frames)
    bad = tmp_path / "clips" / "c"
    bad.mkdir()
    (bad / "ref.png").write_bytes(b"x")
    (bad / "driving.mp4").write_bytes(b"x")
    pipelines = tmp_path / "pipelines.yaml"
    pipelines.write_text(f"pipelines:\n  - name: all\n    root: {tmp_path / 'clips'}\n")
    assert main(["batch", str(pipelines), "--dry-run", "--gpu", "h200", "--gpu-price", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("c: not estimated, the batch skips it: ") and "ref.png" in out[0]
    lines = {line.split(":")[0]: line for line in out[1:3]}
    assert lines["a"].startswith("a: 81 frames") and lines["b"].startswith("b: 157 frames 896x512, 2 segment(s)")
    minutes = [float(lines[k].split("; ")[1].split(" GPU-minutes")[0]) for k in "ab"]
    assert out[3].startswith("total: ") and f"{sum(minutes):.1f} GPU-minutes" in out[3]
    assert not any((tmp_path / "clips" / n / "scailflow").exists() for n in "abc")
    budget = sum(minutes) - 0.5  # both fit one by one, not together
    assert main(["batch", str(pipelines), "--max-gpu-minutes", f"{budget:.1f}", "--gpu", "h200"]) == 3
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and f"over --max-gpu-minutes {budget:.1f}" in err
    assert not any((tmp_path / "clips" / n / "scailflow").exists() for n in "abc")


def test_flags_are_the_option_model(capsys):
    from scailflow.flows.config import BudgetOptions
    from scailflow.options import flag_of

    for command in ("run", "batch"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "cost before the run" in text
        for field in BudgetOptions.model_fields.values():
            assert f"{flag_of(field).names[0]} " in text
