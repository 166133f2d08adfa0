"""Step caches on the SCAIL-2 DiT (scail/step_cache.py), CFG truncation and the `balanced` preset, on the tiny model.

Most tests run a small flow-matching loop on the tiny transformer itself (milliseconds a forward); a few run the tiny
pipeline end to end (segments, records, the MagCache calibration)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scailflow.errors import InputError
from scailflow.scail import step_cache
from scailflow.scail.options import ModelOptions, SamplingOptions, StepCacheSpec, parse_step_cache
from tests.test_scail_speed import rel, tiny_inputs, tiny_model

STEPS = 8
PERMISSIVE = {"easy": "easy:5", "firstblock": "firstblock:5", "taylorseer": "taylorseer:3", "mag": "mag:5"}


def loop(m, inp, steps=STEPS, guidance=5.0, count=True):
    """Euler flow matching with CFG, each branch in its own cache context; returns (final latent, the count)."""
    x = inp["x"].clone()
    neg = inp["context"].flip(1) * 0.5
    counted = step_cache.start_counting(m) if count else None
    with torch.no_grad():
        for i in range(steps):
            t = torch.full((1,), 1000.0 * (1 - i / steps))
            with step_cache.context(m, "cond"):
                c = m(**dict(inp, x=x, t=t))
            with step_cache.context(m, "uncond"):
                u = m(**dict(inp, x=x, t=t, context=neg))
            x = x - (u + guidance * (c - u)) / steps
    return x, counted


def cached_loop(m, inp, text, steps=STEPS):
    step_cache.detach(m)
    step_cache.attach(m, parse_step_cache(text), steps)
    m._reset_stateful_cache()
    return loop(m, inp, steps)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SCAILFLOW_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def calibrated(m, inp, steps=STEPS):
    """MagCache ratios of the tiny model, measured over one uncached loop and stored (SCAILFLOW_HOME)."""
    rec = step_cache.MagCalibration(m)
    try:
        loop(m, inp, steps, count=False)
    finally:
        rec.close()
    ratios = [sum(v) / len(v) for v in zip(*rec.ratios.values())]
    step_cache.save_mag_ratios(m, {"mag_ratios": ratios, "steps": steps})
    return ratios


# ------------------------------------------------------------------------------------------------ options
def test_step_cache_option_forms():
    assert parse_step_cache(0.05) == StepCacheSpec("firstblock", 0.05)  # today's plain float: First Block Cache
    assert parse_step_cache("0.1") == StepCacheSpec("firstblock", 0.1)
    assert parse_step_cache("easy") == StepCacheSpec("easy", 0.2)
    assert parse_step_cache("MAG:0.1") == StepCacheSpec("mag", 0.1)
    assert parse_step_cache("taylorseer:5").threshold == 5
    assert parse_step_cache("off") is None and parse_step_cache(None) is None
    assert ModelOptions(step_cache=0.05).step_cache == 0.05  # recorded as before
    assert ModelOptions(step_cache="fbc").step_cache == "firstblock"
    for bad in ("fast", "easy:x", "easy:-1", "taylorseer:0.5"):
        with pytest.raises(ValueError, match="step_cache"):
            ModelOptions(step_cache=bad)


def test_cli_step_cache_and_cfg_truncate_flags():
    import argparse

    from scailflow.options import from_flags
    from scailflow.scail.cli import add_generate_arguments

    p = argparse.ArgumentParser()
    add_generate_arguments(p)
    base = ["--image", "a", "--mask_image", "b", "--pose", "c", "--mask_video", "d", "--save_file", "e.mp4"]
    args = p.parse_args(base + ["--step_cache", "easy:0.1", "--cfg_truncate", "0.5", "--preset", "balanced"])
    assert from_flags(ModelOptions, args).step_cache == "easy:0.1"
    s = from_flags(SamplingOptions, args)
    assert s.cfg_truncate == 0.5 and s.guided_steps() == 20
    assert from_flags(ModelOptions, p.parse_args(base + ["--step_cache", "0.05"])).step_cache == 0.05


def test_presets_guided_steps():
    assert SamplingOptions(preset="quality").guided_steps() == 40
    assert SamplingOptions(preset="balanced").guided_steps() == 32  # CFG for the first 80% of 40 steps
    assert SamplingOptions(preset="fast").guided_steps() == 0
    b = SamplingOptions(preset="balanced").resolved()
    assert (b.steps, b.guidance, b.shift, b.solver) == (40, 5.0, 3.0, "unipc")


# ------------------------------------------------------------------------------------------------ the caches
def test_the_scail_block_is_in_diffusers_registry():
    m = tiny_model()
    assert step_cache.register_blocks(m) == []  # diffusers' WanTransformerBlock: registered by diffusers


@pytest.mark.parametrize("kind", ["easy", "firstblock", "taylorseer", "mag"])
def test_each_cache_computes_fewer_forwards_and_changes_the_result_boundedly(kind, home):
    m, inp = tiny_model(), tiny_inputs()
    ref, full = loop(m, inp)
    assert full.record()["computed"] == full.record()["forwards"] == 2 * STEPS
    if kind == "mag":
        calibrated(m, inp)
    out, count = cached_loop(m, inp, PERMISSIVE[kind])
    r = count.record()
    assert r["forwards"] == 2 * STEPS and r["computed"] < r["forwards"]
    assert r["by_branch"]["cond"]["computed"] >= 1 and r["by_branch"]["uncond"]["computed"] >= 1
    err = rel(out, ref)
    assert 0 < err < 0.5, err  # an approximation, not a different video


def test_a_tight_threshold_changes_nothing():
    m, inp = tiny_model(), tiny_inputs()
    ref, _ = loop(m, inp)
    out, count = cached_loop(m, inp, "easy:1e-9")
    assert count.record()["skipped"] == 0 and torch.equal(out, ref)


def test_cfg_branches_have_separate_states():
    m, inp = tiny_model(), tiny_inputs()
    step_cache.attach(m, parse_step_cache("firstblock:1e6"), STEPS)  # would skip anything it could
    counted = step_cache.start_counting(m)
    with torch.no_grad():
        with step_cache.context(m, "cond"):
            m(**inp)
        with step_cache.context(m, "uncond"):  # other inputs: must not reuse the cond branch's residual
            u = m(**dict(inp, context=inp["context"] * -1))
        with step_cache.context(m, "cond"):
            m(**inp)
    assert counted.sequence == [("cond", True), ("uncond", True), ("cond", False)]
    step_cache.detach(m)
    with torch.no_grad():
        assert torch.equal(u, m(**dict(inp, context=inp["context"] * -1)))  # computed in full, no hook left


def test_forced_skip_ratio_is_a_fixed_pattern():
    cfg = step_cache.EasyCacheConfig(num_steps=40, force_skip_ratio=0.55)
    skips = cfg.forced_skips()
    assert len(skips) == 22 and 0 not in skips and max(skips) < 40
    m, inp = tiny_model(), tiny_inputs()
    step_cache.attach(m, StepCacheSpec("easy", 0.2, force_skip_ratio=0.5), 8)
    _, count = loop(m, inp, steps=8)
    assert [c for n, c in count.sequence if n == "cond"] == [i not in {1, 3, 5, 7} for i in range(8)]


def test_mag_without_ratios_says_which_command_to_run(home):
    m = tiny_model()
    with pytest.raises(InputError, match="scailflow calibrate"):
        step_cache.attach(m, parse_step_cache("mag"), STEPS)


def test_mag_ratios_beside_the_dit_file_else_under_home(tmp_path, home):
    m = tiny_model()
    dit = tmp_path / "dit" / "scail2.safetensors"
    dit.parent.mkdir()
    dit.write_bytes(b"weights" * 100)
    m._scail_dit_path = str(dit)
    assert step_cache.save_mag_ratios(m, {"mag_ratios": [1.0]}) == dit.with_name("scail2.safetensors.magcache.json")
    dit.with_name("scail2.safetensors.magcache.json").unlink()
    dit.parent.chmod(0o555)
    try:
        where = step_cache.save_mag_ratios(m, {"mag_ratios": [1.0, 0.9]})
    finally:
        dit.parent.chmod(0o755)
    if where.parent == dit.parent:  # running as root: the folder stays writable
        pytest.skip("the DiT's folder cannot be made read-only here")
    assert where.parent == home / "magcache" and step_cache.load_mag_ratios(m) == [1.0, 0.9]


# ------------------------------------------------------------------------------------------------ the pipeline
@pytest.fixture(scope="module")
def pipe():
    from scailflow.scail.loading import load_pipeline

    return load_pipeline(ModelOptions(model="tiny-random", device="cpu"))


def conditioning(frames=9, size=32):
    from scailflow.scail.pipeline import Conditioning

    rng = np.random.default_rng(0)
    img = lambda *s: rng.integers(0, 255, (*s, 3), dtype=np.uint8)  # noqa: E731
    return Conditioning(img(size, size), img(size, size), img(frames, size, size), img(frames, size, size), "a dancer")


def sample(pipe, spec=None, frames=5, **kw):
    step_cache.set_default(pipe.transformer, parse_step_cache(spec), explicit=spec is not None)
    opts = SamplingOptions(seed=3, target_h=32, target_w=32, **kw)
    return pipe(conditioning(frames), 32, 32, opts, progress=lambda *a: None)


def test_every_segment_starts_with_a_full_forward(pipe):
    """2 segments of 5 frames: each one's cache starts fresh, so both follow the same forced pattern."""
    pipe.transformer._scail_step_cache_default = (StepCacheSpec("easy", 0.2, force_skip_ratio=0.5), True)
    try:
        opts = SamplingOptions(seed=3, target_h=32, target_w=32, steps=4, segment_frames=5, overlap_frames=1)
        _, record = pipe(conditioning(9), 32, 32, opts, progress=lambda *a: None)
    finally:
        step_cache.set_default(pipe.transformer, None, explicit=False)
    assert len(record["segments"]) == 2
    seq = pipe.transformer._scail_forward_count.sequence
    first, second = seq[:8], seq[8:]
    assert first == second and first[0] == ("cond", True) and first[1] == ("uncond", True)
    assert record["step_cache"]["skipped"] == 8 and record["step_cache"]["kind"] == "easy:0.2"


def test_quality_is_exact_and_unhooked_after_balanced(pipe):
    ref, rec = sample(pipe, None, steps=3)
    assert rec["step_cache"] == {
        "kind": "off",
        "forwards": 6,
        "computed": 6,
        "skipped": 0,
        "by_branch": {"cond": {"forwards": 3, "computed": 3}, "uncond": {"forwards": 3, "computed": 3}},
    }
    _, bal = sample(pipe, None, preset="balanced", steps=5)
    assert bal["step_cache"]["kind"] == "easy:0.2"
    assert bal["step_cache"]["by_branch"]["uncond"]["forwards"] == 4  # CFG over the first 0.8 of 5 steps
    again, _ = sample(pipe, None, steps=3)
    assert np.array_equal(again, ref)  # the cache came off: bit-identical
    assert not pipe.transformer._diffusers_hook.hooks  # no hook left on the transformer


def test_calibrate_then_mag(pipe, home):
    with pytest.raises(InputError, match="scailflow calibrate --model tiny-random"):
        sample(pipe, "mag", steps=6)
    where, data = step_cache.calibrate(
        pipe, conditioning(9), SamplingOptions(steps=6, target_h=32, target_w=32), 32, 32
    )
    assert where == home / "magcache" / "tiny-random.json" and len(data["mag_ratios"]) == 6
    assert set(data["by_branch"]) == {"cond", "uncond"} and data["mag_ratios"][0] == 1.0
    _, rec = sample(pipe, "mag:10", steps=6)
    assert rec["step_cache"]["kind"] == "mag:10" and rec["step_cache"]["skipped"] > 0
    step_cache.set_default(pipe.transformer, None, explicit=False)


def test_balanced_record_in_output_json(pipe, tmp_path):
    from scailflow.scail.generate import GenerateRequest, generate
    from tests.test_scail_generate import write_prepared

    d = write_prepared(tmp_path)
    step_cache.set_default(pipe.transformer, None, explicit=False)
    req = GenerateRequest(
        d / "ref.png", d / "ref_mask.png", d / "rendered_v2.mp4", d / "rendered_mask_v2.mp4", "x", d / "out.mp4"
    )
    generate(pipe, req, SamplingOptions(preset="balanced", steps=5, seed=1, target_h=32, target_w=32))
    rec = json.loads((d / "out.mp4.json").read_text())
    assert rec["sampling"]["preset"] == "balanced" and rec["sampling"]["cfg_truncate"] == 0.8
    assert rec["sampling"]["guidance"] == 5.0 and rec["step_cache"]["kind"] == "easy:0.2"
    assert rec["step_cache"]["forwards"] == 5 * len(rec["segments"]) + 4 * len(rec["segments"])
