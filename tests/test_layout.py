"""The shape of the code users and contributors rely on: one installed package, one definition per option, a
command line that answers --help without loading the heavy libraries."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGE_FOLDERS = ("flows", "tasks", "scail", "pose", "masks", "prompts")


def python_files():
    for p in ROOT.rglob("*.py"):
        if not {".venv", "build", ".git"} & set(p.relative_to(ROOT).parts):
            yield p


def test_nothing_imports_a_stage_folder_as_a_top_level_name():
    offenders = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in STAGE_FOLDERS
            ]
    assert not offenders, "import these through scailflow.*:\n" + "\n".join(offenders)


@pytest.mark.integration
def test_the_wheel_installs_exactly_one_top_level_package(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("scailflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"scailflow"}
    for folder in STAGE_FOLDERS:  # every stage folder is inside, under its scailflow.* name
        assert f"scailflow/{folder}/__init__.py" in names
    assert "scailflow/prompts/examples_default.txt" in names  # package data travels too


HEAVY = ("torch", "prefect", "cv2", "mediapipe", "google.genai", "diffusers", "transformers", "av")


@pytest.mark.parametrize(
    "command",
    [
        None,
        "run",
        "generate",
        "batch",
        "worker",
        "masks",
        "pose",
        "prompt",
        "init",
        "schema",
        "export",
        "models",
        "estimate",
    ],
)
@pytest.mark.integration
def test_help_loads_no_heavy_library(command):
    code = (
        f"import sys; from scailflow.cli import build_parser; build_parser({command!r}); "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"`scailflow {command or ''} --help` imports {r.stdout.strip()}"


@pytest.mark.integration
def test_version_and_completion():
    from scailflow import __version__

    r = subprocess.run([sys.executable, "-m", "scailflow.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"scailflow {__version__}"
    r = subprocess.run(
        [sys.executable, "-m", "scailflow.cli", "completion", "bash"], capture_output=True, text=True, timeout=120
    )
    assert (
        r.returncode == 0 and "complete" in r.stdout and "--sample_steps" in r.stdout and "--mask-backend" in r.stdout
    )


def _parser(command: str) -> argparse.ArgumentParser:
    from scailflow.cli import build_parser

    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def test_every_model_option_is_one_field_with_the_same_flags_everywhere():
    """generate, run, batch and worker take the model flags of one model; job.yaml keys are the same fields."""
    from scailflow.flows.config import JobConfig
    from scailflow.options import flag_of
    from scailflow.scail.options import ModelOptions, SamplingOptions

    model_flags = {n for f in ModelOptions.model_fields.values() if flag_of(f) for n in flag_of(f).names}
    for command in ("generate", "run", "batch", "worker"):
        strings = {s for a in _parser(command)._actions for s in a.option_strings}
        assert model_flags <= strings, command
    # the sampling flags of `generate` (official names) are the same fields `run` overrides in job.yaml
    gen, run = {}, {}
    for table, command in ((gen, "generate"), (run, "run")):
        for a in _parser(command)._actions:
            table.setdefault(a.dest, set()).update(a.option_strings)
    for name, field in SamplingOptions.model_fields.items():
        if flag_of(field):
            assert set(flag_of(field).names) <= gen[name] and set(flag_of(field).names) <= run[f"sampling.{name}"]
    assert JobConfig.model_fields["sampling"].annotation is SamplingOptions


def test_flags_validate_through_the_model(capsys):
    from scailflow.errors import InputError
    from scailflow.options import from_flags
    from scailflow.scail.options import SamplingOptions

    p = _parser("generate")
    base = ["--image", "a", "--mask_image", "b", "--pose", "c", "--mask_video", "d", "--save_file", "e.mp4"]
    s = from_flags(SamplingOptions, p.parse_args([*base, "--preset", "fast", "--steps", "6"])).resolved()
    assert (s.steps, s.shift, s.guidance, s.solver) == (6, 1.0, 1.0, "unipc")  # the preset fills what is not given
    with pytest.raises(InputError, match=r"--segment_frames.*4k\+1|4k\+1"):
        from_flags(SamplingOptions, p.parse_args([*base, "--segment_frames", "80"]))
    with pytest.raises(InputError, match="--base_seed"):
        from_flags(SamplingOptions, p.parse_args([*base, "--seed", "100000000000000000000000"]))
