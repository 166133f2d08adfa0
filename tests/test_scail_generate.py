"""`scailflow generate`: the official flags, the tiny-random model end to end, output + record, one-line errors."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import pytest

from scailflow.media import probe_video, read_video
from tests.support.folders import official_args, write_prepared
from tests.support.processes import cli as run_cli

pytestmark = pytest.mark.integration  # starts processes/servers/full flows


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("prepared"))


cli = functools.partial(run_cli, timeout=300)


def test_generate_tiny_random_writes_video_and_record(prepared):
    r = cli(
        "generate",
        *official_args(prepared),
        "--model",
        "tiny-random",
        "--prompt",
        "a woman dancing",
        "--target_h",
        64,
        "--target_w",
        32,
        "--steps",
        2,
        "--seed",
        5,
        "--fps",
        16,
    )
    assert r.returncode == 0, r.stderr
    out = prepared / "out.mp4"
    info = probe_video(out)
    assert (info.width, info.height, info.frames) == (32, 64, 9) and abs(info.fps - 16) < 1e-6
    record = json.loads((prepared / "out.mp4.json").read_text())
    assert record["seed"] == 5 and record["prompt"] == "a woman dancing" and "noise" in record["model"]
    assert record["sampling"]["steps"] == 2 and record["frames_out"] == 9
    assert not list(prepared.glob(".*partial*"))  # no temp file left behind


def test_portrait_reference_swaps_landscape_target(prepared):
    r = cli(
        "generate",
        *official_args(prepared, **{"--save_file": prepared / "swap.mp4"}),
        "--model",
        "tiny-random",
        "--target_h",
        32,
        "--target_w",
        64,
        "--steps",
        1,
    )
    assert r.returncode == 0, r.stderr
    frames, _ = read_video(prepared / "swap.mp4")
    assert frames.shape[1:3] == (64, 32)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"--image": "missing.png"}, "image not found"),
        ({"--pose": "ref.png"}, "cannot read video"),
        ({"--target_h": "100"}, "multiple of 32"),
    ],
)
def test_bad_input_is_one_line(prepared, change, message):
    change = {k: (prepared / v if v.endswith((".png", ".mp4")) else v) for k, v in change.items()}
    r = cli("generate", *official_args(prepared, **change), "--model", "tiny-random", "--steps", 1)
    assert r.returncode == 2
    assert_one_error_line(r, message)


@pytest.mark.parametrize("fault", ["bad video", "no DiT file", "DiT not safetensors"])
def test_a_bad_file_fails_before_torch_loads(prepared, tmp_path, fault):
    """Inputs and the release's files are checked before torch, diffusers and the model load: the one error line
    comes in a fraction of a second (it took ~7 s of imports before)."""
    code = (
        "import sys\nfrom scailflow.cli import main\ntry:\n    code = main(sys.argv[1:])\nfinally:\n"
        "    print([m for m in ('torch', 'torchvision', 'diffusers') if m in sys.modules])\nsys.exit(code)"
    )
    release = tmp_path / "release"
    release.mkdir()
    dit = release / ("scail2.pth" if fault == "DiT not safetensors" else "scail2.safetensors")
    if fault == "DiT not safetensors":
        dit.write_bytes(b"{}")
    model = ["--ckpt_dir", release, "--scail_path", dit]
    if fault == "bad video":
        args = ["generate", *official_args(prepared, **{"--pose": prepared / "ref.png"}), "--model", "tiny-random"]
        message = "cannot read video"
    else:
        args = ["generate", *official_args(prepared), *model]
        message = "SCAIL-2 DiT file not found" if fault == "no DiT file" else "the DiT must be a .safetensors file"
    r = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert r.returncode == 2
    assert_one_error_line(r, message)
    assert r.stdout.splitlines()[-1] == "[]", r.stdout


def assert_one_error_line(r, message):
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in r.stderr, r.stderr


def test_mismatched_additional_refs(prepared):
    r = cli(
        "generate",
        *official_args(prepared),
        "--model",
        "tiny-random",
        "--additional_ref_image",
        prepared / "ref.png",
        prepared / "ref.png",
        "--additional_ref_mask_image",
        prepared / "ref_mask.png",
    )
    assert r.returncode == 2 and "paired by position" in r.stderr


def test_missing_checkpoint_says_what_to_download(prepared):
    r = cli("generate", *official_args(prepared))
    assert r.returncode == 2 and "no SCAIL-2 checkpoint configured" in r.stderr and "tiny-random" in r.stderr


def test_wrong_model_checkpoint_is_named(prepared, conformance, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    sd = load_file(str(conformance / "tiny_scail2_state_dict.safetensors"))
    scail1 = {k: v for k, v in sd.items() if not k.startswith("patch_embedding_mask")}
    save_file(scail1, str(tmp_path / "scail1.safetensors"))
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({}, folder / "Wan2.1_VAE.pth")
    r = cli("generate", *official_args(prepared), "--ckpt_dir", folder, "--scail_path", tmp_path / "scail1.safetensors")
    assert r.returncode == 2
    assert_one_error_line(r, "not a SCAIL-2 DiT")
