"""The public reference code's tensors on a tiny model, reproduced (float32, < 1e-5 relative; masks and timesteps exact)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from scailflow.scail import encoders as E
from scailflow.scail.conditioning import masks_to_28ch
from scailflow.scail.model import SCAIL2Transformer
from scailflow.scail.schedulers import make_scheduler


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.fixture(scope="module")
def tiny(conformance):
    cfg = json.loads((conformance / "tiny_scail2_config.json").read_text())
    sd = load_file(str(conformance / "tiny_scail2_state_dict.safetensors"))
    return SCAIL2Transformer.from_official(sd, cfg).eval()


@pytest.fixture(scope="module")
def case(conformance):
    c = load_file(str(conformance / "case_animation.safetensors"))
    batched = {k[3:]: (v if k in ("in.t", "in.clip_fea") else v[None]) for k, v in c.items() if k.startswith("in.")}
    return c, batched


def test_keys_match_official_list(conformance, tiny):
    from scailflow.scail.checkpoint import official_to_module_key

    lines = (conformance / "tiny_scail2_keys.txt").read_text().split("\n")
    keys = [ln.split("\t")[0] for ln in lines if ln.strip()]
    own = tiny.state_dict()
    assert len(keys) == len(own) == 91
    for line in lines:
        if line.strip():
            key, shape, _ = line.split("\t")
            assert list(own[official_to_module_key(key)].shape) == json.loads(shape)


@torch.no_grad()
def test_sequence_entering_block0(tiny, case):
    c, i = case
    tokens, layout = tiny.embed_tokens(i["x"], i["ref_latents"], i["ref_masks"], i["pose_latents"], i["driving_masks"])
    assert layout.total == 114 and layout.video_start == 24 and layout.driving_len == 18
    assert rel(tokens, c["dbg.tokens_in"]) < 1e-5


def test_rope_rotation(tiny, case):
    c, i = case
    _, layout = tiny.embed_tokens(i["x"], i["ref_latents"], i["ref_masks"], i["pose_latents"], i["driving_masks"])
    cos, sin = tiny.rope.cos_sin_pairs(layout)
    assert rel(torch.stack([cos, sin], -1), c["dbg.rope_cos_sin"]) < 1e-6


@torch.no_grad()
def test_time_embedding(tiny, case):
    c, i = case
    e, e0, ctx = tiny.embed_context(i["t"], i["context"], i["clip_fea"])
    assert rel(e, c["dbg.e"]) < 1e-6 and rel(e0.flatten(1), c["dbg.e0"]) < 1e-6
    assert ctx.shape == (1, 257 + 512, 64)


@torch.no_grad()
def test_forward(tiny, case):
    c, i = case
    out = tiny(**i)
    assert out.shape == (1, 16, 3, 8, 12)
    assert rel(out[0], c["out"]) < 1e-5


@torch.no_grad()
def test_forward_with_context_list_matches_padded(tiny, case):
    c, i = case
    listed = dict(i, context=[i["context"][0]])
    assert rel(tiny(**listed)[0], c["out"]) < 1e-5


def test_mask_compression_exact(conformance):
    m = load_file(str(conformance / "mask_case.safetensors"))
    assert torch.equal(masks_to_28ch(m["video9_64x64.in_uint8_thwc"]), m["video9_64x64.out"])
    assert torch.equal(masks_to_28ch(m["video9_64x64.in"]), m["video9_64x64.out"])


@pytest.mark.parametrize("steps,shift", [(40, 3), (40, 5), (8, 5)])
def test_unipc_timesteps_exact(conformance, steps, shift):
    ref = load_file(str(conformance / "sched_cases.safetensors"))
    s = make_scheduler("unipc", steps, shift)
    assert torch.equal(s.timesteps.long(), ref[f"steps{steps}_shift{shift}.timesteps"])
    assert (s.sigmas.float() - ref[f"steps{steps}_shift{shift}.sigmas"]).abs().max() < 1e-6


def test_unipc_trajectory(conformance):
    ref = load_file(str(conformance / "sched_cases.safetensors"))
    s = make_scheduler("unipc", 8, 5)
    x = ref["steps8_shift5.traj.x_init"].clone()
    for n, t in enumerate(s.timesteps):
        v = torch.tanh(0.7 * x) + 0.001 * int(t) * torch.cos(x)
        x = s.step(v, t, x).prev_sample
        assert rel(x, ref[f"steps8_shift5.traj.x_after_step{n}"]) < 1e-5


def test_dpmpp_schedule_is_shifted_linspace():
    s = make_scheduler("dpm++", 8, 5)
    sig = torch.linspace(1, 0, 9)[:-1]
    expected = 5 * sig / (1 + 4 * sig)
    assert torch.allclose(s.sigmas[:-1], expected, atol=1e-6) and s.sigmas[-1] == 0
    assert torch.equal(s.timesteps.cpu(), (expected.double() * 1000).long())


def test_vae_matches_wan(conformance):
    enc = conformance / "encoders"
    vae = E.vae_from_wan_state_dict(load_file(str(enc / "vae_wan_state_dict.safetensors")))
    io = load_file(str(enc / "vae_io.safetensors"))
    assert rel(E.vae_encode(vae, io["video"][None])[0], io["latent_video"]) < 1e-5
    assert rel(E.vae_encode(vae, io["image"][None])[0], io["latent_image"]) < 1e-5
    assert rel(E.vae_decode(vae, io["z_decode_in"][None])[0], io["decoded"]) < 1e-5


def test_t5_matches_wan(conformance):
    enc = conformance / "encoders"
    sd = load_file(str(enc / "t5_wan_state_dict.safetensors"))
    key_map = json.loads((enc / "t5_key_map_wan_to_hf.json").read_text())
    assert all(E.t5_key_map(k) == v for k, v in key_map.items())
    io = load_file(str(enc / "t5_io.safetensors"))
    model = E.umt5_from_wan_state_dict(sd, "eager")
    with torch.no_grad():
        hidden = model(input_ids=io["input_ids"], attention_mask=io["attention_mask"]).last_hidden_state
    for n, length in enumerate((5, 37, 200)):
        assert rel(hidden[n, :length], io[f"context_{n}"]) < 1e-5


def test_clip_matches_wan(conformance):
    enc = conformance / "encoders"
    model = E.clip_from_wan_state_dict(load_file(str(enc / "clip_wan_state_dict.safetensors")), num_heads=4)
    io = load_file(str(enc / "clip_io.safetensors"))
    assert rel(E.clip_pixel_values(io["image"][None]), io["pixel_values"]) < 1e-6
    assert rel(E.encode_image(model, io["image"][None]), io["clip_fea"]) < 1e-5
