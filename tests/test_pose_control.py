"""ComfyUI's pose knobs on our sampler (pose_strength, pose_start, pose_end), on the tiny model: the defaults change
nothing, the pose latent is scaled as ComfyUI scales it, the pose conditions only the steps inside its window, the
output moves away from the default as the strength moves from 1, and the settings are recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from scailflow.scail.encoders import vae_stats
from scailflow.scail.generate import GenerateRequest, generate
from scailflow.scail.options import SamplingOptions
from scailflow.scail.pipeline import Conditioning, SCAIL2Pipeline
from scailflow.scail.pose_control import pose_active
from scailflow.scail.tiny import tiny_components
from tests.test_scail_generate import write_prepared


@pytest.fixture(scope="module")
def pipe():
    return SCAIL2Pipeline(**tiny_components(0))


@pytest.fixture(scope="module")
def cond():
    rng = np.random.default_rng(3)
    video = rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    mask = np.zeros((5, 32, 32, 3), np.uint8)
    mask[:, 8:24, 8:24] = (0, 0, 255)
    return Conditioning(video[0], np.full((32, 32, 3), 255, np.uint8), video, mask, "a person")


def sample(pipe, cond, **kw):
    frames, _ = pipe(cond, 32, 32, SamplingOptions(steps=4, seed=7, guidance=1.0, **kw))
    return frames.astype(np.float64)


def poses_seen(pipe, cond, **kw) -> list[torch.Tensor]:
    """The pose latent the transformer received at each step (a recording wrapper around the real forward)."""
    seen, forward = [], pipe.transformer.forward

    def recording(*a, **k):
        seen.append(k["pose_latents"].detach().clone())
        return forward(*a, **k)

    pipe.transformer.forward = recording
    try:
        sample(pipe, cond, **kw)
    finally:
        del pipe.transformer.forward
    return seen


def test_defaults_are_bit_identical(pipe, cond):
    base = sample(pipe, cond)
    explicit = sample(pipe, cond, pose_strength=1.0, pose_start=0.0, pose_end=1.0)
    assert np.array_equal(base, explicit)


def test_strength_scales_the_raw_latent_as_comfyui(pipe, cond):
    one, two = poses_seen(pipe, cond)[0], poses_seen(pipe, cond, pose_strength=2.0)[0]
    mean, std = vae_stats(pipe.vae, one)
    # normalised latents n = (z - mean) / std: twice the raw latent z is 2n + mean / std
    torch.testing.assert_close(two, 2 * one + mean / std)


def test_window_limits_the_steps_with_pose(pipe, cond):
    seen = poses_seen(pipe, cond, pose_start=0.25, pose_end=0.5)  # 4 steps: i/4 in [0.25, 0.5] -> steps 1, 2
    assert [bool(p.abs().sum() > 0) for p in seen] == [False, True, True, False]
    assert [pose_active(i, 4, 0.25, 0.5) for i in range(4)] == [False, True, True, False]
    assert all(bool(p.abs().sum() > 0) for p in poses_seen(pipe, cond))  # default: every step


def test_output_moves_with_strength_and_window(pipe, cond):
    base = sample(pipe, cond)
    far = np.abs(sample(pipe, cond, pose_strength=0.0) - base).mean()
    near = np.abs(sample(pipe, cond, pose_strength=0.8) - base).mean()
    assert 0 < near < far  # the further from 1, the further from the default video
    short = np.abs(sample(pipe, cond, pose_end=0.5) - base).mean()
    none = np.abs(sample(pipe, cond, pose_start=1.0, pose_end=1.0) - base).mean()  # the pose at no step
    assert 0 < short < none


def test_window_must_be_ordered():
    with pytest.raises(ValidationError, match="pose_start"):
        SamplingOptions(pose_start=0.6, pose_end=0.4)
    with pytest.raises(ValidationError):
        SamplingOptions(pose_strength=-1)


def test_takes_made_before_the_knobs_keep_their_names():
    """At their defaults the knobs are not in the keys (take names, cached videos, kept segments); set, they are."""
    assert not {"pose_strength", "pose_start", "pose_end"} & set(SamplingOptions(steps=4).key_doc())
    assert SamplingOptions(pose_strength=0.5).key_doc()["pose_strength"] == 0.5
    assert SamplingOptions(pose_end=0.5).key_doc(exclude={"seed"}) != SamplingOptions().key_doc(exclude={"seed"})


def test_recorded_in_the_output_record(pipe, tmp_path):
    d = write_prepared(tmp_path)
    req = GenerateRequest(
        d / "ref.png", d / "ref_mask.png", d / "rendered_v2.mp4", d / "rendered_mask_v2.mp4", "x", d / "out.mp4"
    )
    opts = SamplingOptions(steps=1, seed=1, target_h=32, target_w=32, pose_strength=0.5, pose_start=0.1, pose_end=0.9)
    generate(pipe, req, opts)
    record = json.loads((d / "out.mp4.json").read_text())["sampling"]
    assert (record["pose_strength"], record["pose_start"], record["pose_end"]) == (0.5, 0.1, 0.9)
