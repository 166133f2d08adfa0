"""Replacement mode, additional references and history frames, written from the spec (no shared case covers them)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from scailflow.errors import InputError
from scailflow.scail.model import SCAIL2Transformer, TokenLayout, tiny_config
from scailflow.scail.pipeline import Conditioning, SamplingOptions, SCAIL2Pipeline
from scailflow.scail.segments import output_frames, plan_segments
from scailflow.scail.tiny import tiny_components

T, H, W = 3, 8, 12  # latent frames and size: token grid 4 x 6, driving grid 2 x 3


def expected_angles(t: float, y: float, x: float, pairs: int = 8) -> list[float]:
    """Angles of one position, straight from the spec: axis split [c-2(c//3), c//3, c//3], freq 10000^(-j/n)."""
    split = (pairs - 2 * (pairs // 3), pairs // 3, pairs // 3)
    out = []
    for pos, n in zip((t, y, x), split):
        out += [pos * 10000 ** (-j / n) for j in range(n)]
    return out


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SCAIL2Transformer(**SCAIL2Transformer.config_from_official(tiny_config())).eval()


def inputs(k_refs: int = 0, batch: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(batch, *s, generator=g)  # noqa: E731
    kw = dict(
        x=r(16, T, H, W),
        t=torch.full((batch,), 500),
        context=r(7, 32),
        clip_fea=r(257, 1280),
        ref_latents=r(16, 1, H, W),
        ref_masks=torch.rand(batch, 28, 1, H, W, generator=g),
        pose_latents=r(16, T, H // 2, W // 2),
        driving_masks=torch.rand(batch, 28, T, H // 2, W // 2, generator=g),
    )
    if k_refs:
        kw["additional_ref_latents"] = r(16, k_refs, H, W)
        kw["additional_ref_masks"] = torch.rand(batch, 28, k_refs, H, W, generator=g)
    return kw


def token_angles(model, layout: TokenLayout, index: int) -> torch.Tensor:
    cos, sin = model.rope.cos_sin_pairs(layout)
    return torch.atan2(sin[index], cos[index])


def wrap(a):
    return torch.remainder(torch.as_tensor(a, dtype=torch.float64) + math.pi, 2 * math.pi) - math.pi


@pytest.mark.parametrize("replace", [False, True])
def test_rope_positions_per_part(model, replace):
    K = 2
    layout = TokenLayout(K, T, 4, 6, replace)
    plane = 24
    dy = 120 if replace else 0
    t0 = K if replace else K + 1
    # additional ref 1, token at (y=2, x=3); the reference at time K; a video token; unpooled check is exact
    checks = [
        (1 * plane + 2 * 6 + 3, (1, 2 + dy, 3)),
        (K * plane + 5, (K, 0 + dy, 5)),
        ((K + 1) * plane + 1 * plane + 3 * 6 + 4, (t0 + 1, 3, 4)),
    ]
    for index, pos in checks:
        assert torch.allclose(
            wrap(token_angles(model, layout, index) - torch.tensor(expected_angles(*pos), dtype=torch.float64)),
            torch.zeros(8, dtype=torch.float64),
            atol=1e-9,
        ), (index, pos)


def test_driving_rope_is_pooled_full_grid(model):
    layout = TokenLayout(0, T, 4, 6, False)
    cos, sin = model.rope.cos_sin_pairs(layout)
    first_driving = layout.video_start + layout.video_len
    # driving token (t=0, y=0, x=0) averages the full-grid positions (1, {0,1}, {120,121}) as complex numbers
    z = sum(np.exp(1j * np.array(expected_angles(1, y, 120 + x))) for y in (0, 1) for x in (0, 1)) / 4
    assert np.allclose(cos[first_driving].numpy(), z.real) and np.allclose(sin[first_driving].numpy(), z.imag)
    assert (cos[first_driving] ** 2 + sin[first_driving] ** 2 < 1 - 1e-6).any()  # pooled: no longer unit-norm


@torch.no_grad()
def test_replacement_changes_only_positions(model):
    kw = inputs()
    anim, repl = model(**kw, replace_flag=False), model(**kw, replace_flag=True)
    assert anim.shape == repl.shape == (1, 16, T, H, W)
    assert not torch.allclose(anim, repl)
    tok_a, lay_a = model.embed_tokens(
        **{k: kw[k] for k in ("x", "ref_latents", "ref_masks", "pose_latents", "driving_masks")}, replace_flag=False
    )
    tok_r, lay_r = model.embed_tokens(
        **{k: kw[k] for k in ("x", "ref_latents", "ref_masks", "pose_latents", "driving_masks")}, replace_flag=True
    )
    assert torch.equal(tok_a, tok_r) and lay_a.total == lay_r.total


@torch.no_grad()
def test_additional_references_prepended_in_order(model):
    kw = inputs(k_refs=2)
    tokens, layout = model.embed_tokens(
        kw["x"],
        kw["ref_latents"],
        kw["ref_masks"],
        kw["pose_latents"],
        kw["driving_masks"],
        None,
        kw["additional_ref_latents"],
        kw["additional_ref_masks"],
    )
    assert layout.num_additional_refs == 2 and layout.total == 3 * 24 + T * 24 + T * 6
    # the second extra ref's tokens are patch_embedding(latent + ones) + patch_embedding_mask(its mask)
    lat = torch.cat([kw["additional_ref_latents"][:, :, 1:2], torch.ones(1, 4, 1, H, W)], 1)
    own = model.patch_embedding(lat).flatten(2).transpose(1, 2) + model.patch_embedding_mask(
        kw["additional_ref_masks"][:, :, 1:2]
    ).flatten(2).transpose(1, 2)
    assert torch.allclose(tokens[:, 24:48], own, atol=1e-6)
    base = model(**inputs())
    with_refs = model(**kw)
    assert with_refs.shape == base.shape and not torch.allclose(with_refs, base)


def test_additional_reference_masks_must_pair(model):
    kw = inputs(k_refs=2)
    kw["additional_ref_masks"] = kw["additional_ref_masks"][:, :, :1]
    with pytest.raises(ValueError, match="pair"):
        model(**kw)


@torch.no_grad()
def test_batch_of_two_equals_two_singles(model):
    kw = inputs(batch=2)
    both = model(**kw)
    for b in range(2):
        one = model(**{k: (v[b : b + 1] if isinstance(v, torch.Tensor) else v) for k, v in kw.items()})
        assert torch.allclose(both[b : b + 1], one, atol=1e-5)


@torch.no_grad()
def test_history_flags_enter_the_video_tokens(model):
    kw = inputs()
    flags = torch.zeros(1, 4, T, H, W)
    flags[:, :, :1] = 1
    plain, marked = model(**kw), model(**kw, history_mask=flags)
    assert not torch.allclose(plain, marked)


@pytest.mark.parametrize(
    "n,keep_tail,expect_out,expect_segments",
    [
        (1, False, 1, 1),
        (4, False, 1, 1),
        (5, False, 5, 1),
        (81, False, 81, 1),
        (90, False, 81, 1),
        (157, False, 157, 2),
        (160, False, 157, 2),
        (90, True, 90, 2),
        (160, True, 160, 3),
        (7, True, 7, 1),
        (233, False, 233, 3),
    ],
)
def test_segment_plan(n, keep_tail, expect_out, expect_segments):
    plan = plan_segments(n, 81, 5, keep_tail)
    assert len(plan) == expect_segments and output_frames(plan) == expect_out
    for s in plan:
        assert (s.length - 1) % 4 == 0 and s.start + s.length - s.pad <= n
        assert s.history == (0 if s is plan[0] else 5)


class SpyPipeline(SCAIL2Pipeline):
    """Records what the VAE encodes, so the history hand-over can be checked."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.encoded = []

    def _vae_encode(self, video):
        self.encoded.append(video.clone())
        return super()._vae_encode(video)


@pytest.mark.integration  # the whole pipeline end to end: tens of seconds on 2 cores
def test_long_video_hands_over_history_frames():
    pipe = SpyPipeline(**tiny_components(0))
    rng = np.random.default_rng(0)
    n = 24  # segments of 9 frames, stride 4: 9 + 4 + 4 + 4 + 4 = 25 > 24 -> 5 segments... see plan below
    driving = rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    mask = np.zeros_like(driving)
    mask[:, 8:24, 8:24] = (0, 0, 255)
    cond = Conditioning(driving[0], np.full((32, 32, 3), 255, np.uint8), driving, mask, "a person")
    opts = SamplingOptions(steps=2, guidance=1.0, seed=7, segment_frames=9, overlap_frames=5)
    denoised = []
    original = pipe.denoise

    def spy_denoise(latents, ctx, neg, kw, o, history, progress=None):
        out = original(latents, ctx, neg, kw, o, history, progress)
        denoised.append((out.clone(), None if history is None else history.clone(), kw))
        return out

    pipe.denoise = spy_denoise
    frames, record = pipe(cond, 32, 32, opts)
    plan = plan_segments(n, 9, 5)
    assert len(frames) == output_frames(plan) == record["frames_out"]
    assert len(denoised) == len(plan) > 1
    first, second = denoised[0], denoised[1]
    assert first[1] is None
    history = second[1]
    assert history.shape[2] == 2  # 5 frames -> 2 latent frames
    assert torch.equal(second[0][:, :, :2], history)  # forced after the last solver step
    # the history is the VAE latent of the last 5 decoded frames of the previous segment
    handed = [v for v in pipe.encoded if v.shape[1] == 5]
    assert handed and handed[0].shape == (3, 5, 32, 32)


def test_check_inputs_rejects_mismatched_masks():
    pipe = SCAIL2Pipeline(**tiny_components(0))
    img = np.zeros((32, 32, 3), np.uint8)
    video = np.zeros((5, 32, 32, 3), np.uint8)
    bad = Conditioning(img, np.zeros((16, 16, 3), np.uint8), video, video, "x")
    with pytest.raises(InputError, match="reference mask"):
        pipe(bad, 32, 32, SamplingOptions(steps=1, guidance=1))
    bad = Conditioning(img, img, video, video[:3], "x")
    with pytest.raises(InputError, match="driving mask has 3 frames"):
        pipe(bad, 32, 32, SamplingOptions(steps=1, guidance=1))
    with pytest.raises(InputError, match="multiples of 32"):
        pipe(Conditioning(img, img, video, video, "x"), 40, 32, SamplingOptions(steps=1))


@pytest.mark.integration  # the whole pipeline end to end: tens of seconds on 2 cores
def test_seed_reproducible_and_recorded():
    pipe = SCAIL2Pipeline(**tiny_components(0))
    rng = np.random.default_rng(1)
    video = rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    cond = Conditioning(video[0], np.full((32, 32, 3), 255, np.uint8), video, video, "a person")
    a, ra = pipe(cond, 32, 32, SamplingOptions(steps=2, seed=11))
    b, _ = pipe(cond, 32, 32, SamplingOptions(steps=2, seed=11))
    c, rc = pipe(cond, 32, 32, SamplingOptions(steps=2, seed=-1))
    assert np.array_equal(a, b) and ra["seed"] == 11
    assert 0 <= rc["seed"] <= sys.maxsize and rc["seed"] != ra["seed"]
