"""The community's recipes: Euler sampling on ComfyUI's schedule, and colour that holds across the segments of a long
video (matched to the first segment; on in `scailflow run`, off in `scailflow generate`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scailflow.files import write_text_atomic
from scailflow.flows.demo import astronaut, sway_frames
from scailflow.media import write_image, write_video
from scailflow.scail.color import ColorMatcher, lab_drift, mean_lab
from scailflow.scail.schedulers import make_scheduler
from tests.support.folders import official_args, write_prepared
from tests.support.processes import cli


def comfy_simple_sigmas(steps: int, shift: float) -> np.ndarray:
    """ComfyUI's "simple" scheduler for a flow model: its table of 1000 shifted sigmas, walked backwards."""
    t = np.arange(1, 1001) / 1000
    table = shift * t / (1 + (shift - 1) * t)
    ss = len(table) / steps
    return np.array([table[-(1 + int(x * ss))] for x in range(steps)] + [0.0])


@pytest.mark.parametrize("steps,shift", [(6, 5.0), (4, 1.0), (20, 3.0)])
def test_euler_follows_comfyui_simple_schedule(steps, shift):
    sched = make_scheduler("euler", steps, shift)
    np.testing.assert_allclose(sched.sigmas.numpy(), comfy_simple_sigmas(steps, shift), atol=1.5e-3)
    np.testing.assert_allclose(sched.timesteps.numpy(), sched.sigmas[:-1].numpy() * 1000, rtol=1e-6)


def test_euler_steps_are_plain_euler():
    sched = make_scheduler("euler", 6, 5.0)
    x = torch.randn(1, 16, 2, 4, 4)
    v = torch.randn_like(x)
    latents, sigmas = x.clone(), sched.sigmas
    for i, t in enumerate(sched.timesteps):
        latents = sched.step(v, t, latents).prev_sample
        torch.testing.assert_close(latents, x + (sigmas[i + 1] - sigmas[0]) * v)
    torch.testing.assert_close(latents, x - v)  # a straight flow lands exactly: x0 = x1 - v


# ------------------------------------------------------------------------------------------------ colour


def drifting_clip(segments=3, frames=9, size=96):
    """A real clip (the astronaut swaying) cut in segments, each later one with a stronger warm cast and darker,
    the way long SCAIL-2 / Wan videos drift; returns (clean, drifted) lists of float RGB [T, H, W, 3] in [0, 1]."""
    clip = sway_frames(astronaut(size), segments * frames).astype(np.float64) / 255
    clean, drifted = [], []
    for k in range(segments):
        seg = clip[k * frames : (k + 1) * frames]
        cast = np.array([1 + 0.08 * k, 1.0, 1 - 0.1 * k]) * (1 - 0.07 * k)
        clean.append(seg)
        drifted.append(np.clip(seg * cast + 0.02 * k, 0, 1))
    return clean, drifted


def psnr(a, b):
    return 10 * np.log10(1 / np.mean((a - b) ** 2))


@pytest.mark.parametrize("method,max_after", [("reinhard", 1.0), ("histogram", 0.5)])
def test_colour_matching_removes_drift_on_a_real_clip(method, max_after):
    clean, drifted = drifting_clip()
    matcher = ColorMatcher(method)
    matcher.set_reference(drifted[0])
    ref = mean_lab(drifted[0])
    for k in (1, 2):
        out, stats = matcher.match(drifted[k])
        assert stats["lab_drift_before"] == pytest.approx(lab_drift(drifted[k], ref), abs=1e-3)
        assert stats["lab_drift_before"] > 4 * k  # visible drift, growing
        assert stats["lab_drift_after"] < max_after
        assert out.shape == drifted[k].shape and out.min() >= 0 and out.max() <= 1
        assert psnr(out, clean[k]) > psnr(drifted[k], clean[k]) + 4  # closer to the undrifted frames


@pytest.mark.integration
def test_generate_keeps_official_colours_unless_asked(tmp_path):
    d = write_prepared(tmp_path)  # 11 driving frames: 5-frame segments, 1 frame handed over: 2 segments
    common = ["--model", "tiny-random", "--target_h", 64, "--target_w", 32, "--steps", 2, "--seed", 1]
    common += ["--segment_frames", 5, "--overlap_frames", 1]
    r = cli("generate", *official_args(d), *common)
    assert r.returncode == 0, r.stderr
    record = json.loads((d / "out.mp4.json").read_text())
    assert len(record["segments"]) == 2 and record["color_match"] == {"method": "off", "segments": []}
    r = cli("generate", *official_args(d), *common, "--color_match", "histogram")
    assert r.returncode == 0, r.stderr
    cm = json.loads((d / "out.mp4.json").read_text())["color_match"]
    assert cm["method"] == "histogram" and [s["segment"] for s in cm["segments"]] == [2]
    assert record["sampling"]["color_match"] is None


@pytest.mark.integration
@pytest.mark.usefixtures("report_to_shared_server")
def test_run_matches_colours_of_a_long_clip_by_default(tmp_path):
    folder = tmp_path / "long"
    folder.mkdir()
    still = astronaut(64)
    write_image(folder / "ref.png", still)
    write_video(folder / "driving.mp4", sway_frames(still, 13), fps=16)
    write_text_atomic(
        folder / "job.yaml",
        "sampling:\n  steps: 2\n  target_h: 64\n  target_w: 64\n  seed: 3\n  segment_frames: 5\n  overlap_frames: 1\n",
    )
    r = cli("run", folder, "--model", "tiny-random", timeout=900)
    assert r.returncode == 0, r.stderr
    record = json.loads((folder / "scailflow" / "output.mp4.json").read_text())
    cm = record["color_match"]
    assert cm["method"] == "reinhard" and record["sampling"]["color_match"] == "reinhard"
    assert [s["segment"] for s in cm["segments"]] == [2, 3]
    assert all(s["lab_drift_after"] <= s["lab_drift_before"] for s in cm["segments"])
