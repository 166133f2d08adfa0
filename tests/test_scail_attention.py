"""Attention backends (scail/attention.py), the verified FlashAttention 3 build (scail/fa3.py) and fp8 attention
(scail/fp8_attention.py). FA3 itself runs on Hopper GPUs only: on the CPU the same backend function runs with the
kernel's arithmetic emulated; the GPU tests at the end compare the real kernel with that emulation."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from scailflow.errors import InputError
from scailflow.scail import attention, fa3
from scailflow.scail.fp8_attention import F8, F8_MAX, emulate_fa3, hadamard, quantize_qkv
from scailflow.scail.options import ModelOptions
from tests.test_scail_speed import rel, tiny_inputs, tiny_model

needs_fp8 = pytest.mark.skipif(F8 is None, reason="this torch has no float8 dtypes")
HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


def reference_attention(q, k, v):
    """Exact attention in float64 on (B, S, H, D)."""
    q, k, v = (t.double().transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2)


def gaussian_qkv(seed=0, S=512, H=4, D=128):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, S, H, D, generator=g) for _ in range(3)]


def outlier_qkv(seed=0, S=512, H=4, D=128):
    """Transformer-like q, k: a few channels 10-30x larger (shared by q and k), a per-channel offset on k, sharp
    attention (logit std ~3) -- what makes plain per-head fp8 attention inaccurate."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, S, H, D, generator=g) for _ in range(3))
    ch = torch.randperm(D, generator=g)[:4]
    boost = 10 + 20 * torch.rand(4, generator=g)
    q[..., ch] *= boost
    k[..., ch] *= boost
    k = k + torch.randn(1, 1, H, D, generator=g) * 2
    v = v * (0.5 + torch.rand(D, generator=g)) + torch.randn(D, generator=g)
    logit_std = (q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2) / D**0.5).std()
    return q * (3 / logit_std), k, v


def fp8_attention(q, k, v, rotate=True, center=True):
    q8, k8, v8, dq, dk, dv, v_mean = quantize_qkv(q, k, v, rotate=rotate, center=center)
    out = emulate_fa3(q8, k8, v8, q_descale=dq, k_descale=dk, v_descale=dv)
    return out.float() + v_mean


# ------------------------------------------------------------------------------------------------ backend choice
@pytest.mark.parametrize(
    "device,cap,fa3_ok,expect",
    [
        ("cuda", (9, 0), True, "flash3"),  # H100 / H200 with scailflow[hopper]
        ("cuda", (9, 0), False, "cudnn"),  # Hopper without it (or a build that failed its hash check)
        ("cuda", (8, 9), True, "cudnn"),  # Ada: FA3 is Hopper-only
        ("cuda", (8, 0), False, "cudnn"),
        ("cuda", (7, 5), False, "sdpa"),
        ("cpu", (0, 0), True, "sdpa"),
    ],
)
def test_auto_picks_fa3_on_hopper_only(device, cap, fa3_ok, expect):
    assert attention.choose_attention("auto", device, cap, fa3_ok) == expect


def test_explicit_choices_pass_through_and_bogus_is_refused():
    assert attention.choose_attention("cudnn", "cpu") == "cudnn"
    assert attention.resolve_attention("auto", "cpu") == "sdpa"
    with pytest.raises(ValueError):
        attention.choose_attention("bogus", "cuda", (9, 0), True)


def test_fp8_attention_option_and_flag():
    import argparse

    from scailflow.options import add_flags, from_flags

    p = argparse.ArgumentParser()
    add_flags(p, ModelOptions)
    opts = from_flags(ModelOptions, p.parse_args(["--attention", "auto", "--fp8_attention"]))
    assert opts.fp8_attention and opts.speedups() == {"attention": "auto", "fp8_attention": True}
    with pytest.raises(ValueError, match="FlashAttention 3"):
        ModelOptions(attention="cudnn", fp8_attention=True)


# ------------------------------------------------------------------------------------------------ fp8 recipe math
def test_hadamard_is_scipys_orthonormal_hadamard():
    from scipy.linalg import hadamard as scipy_hadamard

    for n in (1, 2, 16, 128):
        h = hadamard(n, dtype=torch.float64)
        assert torch.equal(h * n**0.5, torch.from_numpy(scipy_hadamard(n)).double())
        assert torch.allclose(h @ h.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError):
        hadamard(96)


@needs_fp8
def test_scales_against_a_float_reference():
    q, k, v = outlier_qkv(1)
    k = k + 300.0  # a large offset: the bound-based scale must still keep every value in range
    q[0, :, 2] = 0.0  # an all-zero head must not divide by zero
    q8, k8, v8, dq, dk, dv, v_mean = quantize_qkv(q, k, v)
    assert (q8.dtype, k8.dtype, v8.dtype) == (F8, F8, F8) and dq.shape == dk.shape == dv.shape == (1, 4)
    h = torch.from_numpy(__import__("scipy.linalg").linalg.hadamard(128) / 128**0.5)
    qh, kh = q.double() @ h, k.double() @ h
    kc = kh - kh.mean(1, keepdim=True)
    vc = v.double() - v.double().mean(1, keepdim=True)
    # exactly amax / 448 per (batch, head) of what is cast: the rotated q, the rotated and centred k, the centred v
    live = [0, 1, 3]
    for d, x in ((dq, qh), (dk, kc), (dv, vc)):
        assert torch.allclose(d.double()[0, live], x.abs().amax(dim=(1, 3))[0, live] / F8_MAX, rtol=1e-4)
    for x8, d, ref in ((q8, dq, qh), (k8, dk, kc), (v8, dv, vc)):
        back = x8.double() * d.double()[:, None, :, None]
        assert torch.isfinite(back).all() and x8.float().abs().max() <= F8_MAX
        assert rel(back[:, :, live], ref[:, :, live]) < 0.04  # e4m3: 3 mantissa bits
    assert torch.equal(q8[0, :, 2].float(), torch.zeros(512, 128))
    assert torch.allclose(v_mean.double(), v.double().mean(1, keepdim=True), atol=1e-5)


@needs_fp8
def test_emulated_fp8_attention_close_to_exact_attention():
    """Flat attention of Gaussian q, k, v (what random weights give): ~5% is e4m3's floor; bf16 attention ~0.2%."""
    q, k, v = gaussian_qkv(2)
    ref = reference_attention(q, k, v)
    err = rel(fp8_attention(q, k, v), ref)
    assert 0.01 < err < 0.08
    bf = emulate_fa3(*(t.bfloat16() for t in (q, k, v)))
    assert bf.dtype == torch.bfloat16 and rel(bf, ref) < 0.01


@needs_fp8
def test_rotation_and_centring_cut_the_outlier_error():
    """With outlier channels the plain per-head recipe loses ~15%; the Hadamard rotation + K mean brings it to ~3%."""
    q, k, v = outlier_qkv(3)
    ref = reference_attention(q, k, v)
    plain = rel(fp8_attention(q, k, v, rotate=False, center=False), ref)
    fixed = rel(fp8_attention(q, k, v), ref)
    assert fixed < 0.05 and plain > 2.5 * fixed, (plain, fixed)


# ------------------------------------------------------------------------------------------------ through diffusers
@needs_fp8
def test_flash3_backend_runs_in_the_model_through_diffusers_registry():
    """The `_flash_3` slot of diffusers' registry runs our function (here with the kernel emulated): fp8 for the
    self-attention of the model that asked for it, bf16/fp32 for cross-attention and for a model that did not."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    calls = []

    def recording_kernel(q, k, v, **kw):
        calls.append((q.dtype, q.shape[1] == k.shape[1]))
        return emulate_fa3(q, k, v, **kw)

    inp = tiny_inputs()
    a, b = tiny_model(0), tiny_model(0)
    with torch.no_grad():
        ref = a(**inp)
        assert attention.set_attention(a, "auto", fp8=True, kernel=recording_kernel) == ("flash3", True)
        assert attention.set_attention(b, "auto", fp8=False, kernel=recording_kernel) == ("flash3", False)
        assert _AttentionBackendRegistry._backends[AttentionBackendName._FLASH_3] is attention.flash3_attention
        out_a = a(**inp)
        kinds_a = set(calls)
        calls.clear()
        out_b = b(**inp)
        kinds_b = set(calls)
    assert kinds_a == {(F8, True), (torch.float32, False)}  # fp8 self-attention, fp32 cross-attention (CPU)
    assert kinds_b == {(torch.float32, True), (torch.float32, False)}
    assert 1e-4 < rel(out_a, ref) < 0.1
    assert rel(out_b, ref) < 1e-5


def test_apply_speedups_records_fp8_attention_off_where_fa3_cannot_run():
    from scailflow.scail.speed import apply_speedups

    m = tiny_model()
    applied = apply_speedups(m, ModelOptions(attention="auto", fp8_attention=True), "cpu")
    assert applied == {"attention": "sdpa", "fp8_attention": attention.FP8_OFF_REASON}


# ------------------------------------------------------------------------------------------------ the verified build
def _fake_fa3(tmp_path, marker):
    """A build that is not the pinned one: an interface module that would leave a marker if it ever ran."""
    (tmp_path / "fa3_fwd").mkdir()
    (tmp_path / "fa3_fwd" / "_C.abi3.so").write_bytes(b"\x7fELF not the pinned kernels")
    (tmp_path / "fa3_fwd_interface.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (tmp_path / "fa3_fwd_config.py").write_text("CONFIG = {}\n")


def test_tampered_fa3_is_refused_and_never_runs(tmp_path, monkeypatch):
    import importlib
    import sys

    marker = tmp_path / "ran.txt"
    _fake_fa3(tmp_path, marker)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("fa3_fwd", "fa3_fwd._C", "fa3_fwd_interface", "fa3_fwd_config"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    importlib.invalidate_caches()
    monkeypatch.setattr(fa3, "_LOADED", {})
    with pytest.raises(InputError, match="refusing to load it") as e:
        fa3.load()
    assert str(tmp_path) in str(e.value) and "scailflow[hopper]" in str(e.value)
    assert not marker.exists()
    # the same files pass when they are what is pinned (the check is by content, nothing else)
    pins = {name: fa3.sha256_file(path) for name, path in fa3.locate().items()}
    assert fa3.verify(pins) == fa3.locate()
    assert not marker.exists()


@pytest.mark.skipif(fa3.locate() is None, reason="fa3-fwd (scailflow[hopper]) is not installed")
def test_installed_fa3_is_the_pinned_build():
    paths = fa3.verify()
    assert set(paths) == set(fa3.PINNED_SHA256)


# ------------------------------------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from tests.support.folders import write_prepared  # video I/O (PyAV) only where the CLI tests run

    return write_prepared(tmp_path_factory.mktemp("prepared"))


@pytest.mark.integration
def test_generate_fp8_attention_on_cpu_runs_and_records_that_it_was_off(prepared):
    from tests.support.folders import official_args
    from tests.test_scail_generate import cli

    r = cli(
        "generate",
        *official_args(prepared),
        "--model",
        "tiny-random",
        "--target_h",
        64,
        "--target_w",
        32,
        "--steps",
        1,
        "--attention",
        "auto",
        "--fp8_attention",
    )
    assert r.returncode == 0, r.stderr
    assert "fp8 attention is off" in r.stderr
    record = json.loads((prepared / "out.mp4.json").read_text())
    assert record["speedups"]["fp8_attention"].startswith("off")


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--attention", "flash3"], "FlashAttention 3 runs on Hopper GPUs"),
        (["--attention", "cudnn", "--fp8_attention"], "fp8_attention runs in FlashAttention 3"),
    ],
)
@pytest.mark.integration
def test_generate_impossible_attention_is_one_line(prepared, flags, message):
    from tests.support.folders import official_args
    from tests.test_scail_generate import assert_one_error_line, cli

    r = cli("generate", *official_args(prepared), "--model", "tiny-random", "--steps", 1, *flags)
    assert r.returncode == 2
    assert_one_error_line(r, message)


# ------------------------------------------------------------------------------------------------ Hopper GPU only
needs_fa3 = pytest.mark.skipif(not HOPPER or fa3.locate() is None, reason="needs a Hopper GPU and scailflow[hopper]")


@needs_fa3
def test_real_fa3_matches_its_emulation_and_exact_attention():
    kernel = fa3.load().flash_attn_func
    q, k, v = (t.cuda() for t in outlier_qkv(4, S=2048, H=8))
    ref = reference_attention(q, k, v)
    bq, bk, bv = (t.bfloat16() for t in (q, k, v))
    assert rel(kernel(bq, bk, bv), ref) < 0.01
    q8, k8, v8, dq, dk, dv, v_mean = quantize_qkv(bq, bk, bv)
    real = kernel(q8, k8, v8, q_descale=dq, k_descale=dk, v_descale=dv)
    emu = emulate_fa3(q8, k8, v8, q_descale=dq, k_descale=dk, v_descale=dv)
    assert real.dtype == torch.bfloat16 and rel(real, emu) < 0.02
    assert rel(real.float() + v_mean, ref) < 0.05


@needs_fa3
def test_tiny_model_on_hopper_flash3_and_fp8():
    from scailflow.scail.model import SCAIL2Transformer, tiny_config

    torch.manual_seed(0)  # head_dim 128, the real model's
    cfg = SCAIL2Transformer.config_from_official(tiny_config(dim=256, num_heads=2, ffn_dim=256))
    m = SCAIL2Transformer(**cfg).eval().cuda()
    inp = {k: v.cuda() for k, v in tiny_inputs(h=16, w=16).items()}
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        ref = m(**inp)
        assert attention.set_attention(m, "auto", fp8=False) == ("flash3", False)
        bf = m(**inp)
        attention.set_attention(m, "flash3", fp8=True)
        f8 = m(**inp)
    assert rel(bf, ref) < 0.02 and 1e-4 < rel(f8, ref) < 0.15
