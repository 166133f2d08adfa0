"""The fused Triton fp8 preparation (scail/fp8_attention_triton.py) against the tensor ops of scail/fp8_attention.py.

No GPU here: the kernels run under Triton's interpreter in a child Python (`TRITON_INTERPRET=1` must be set before
triton is imported), on small sizes whose token count is not a multiple of the tile. The values just before the
e4m3 cast (`precast`) are compared with the tensor ops' to fp32 rounding, then the real op's e4m3 outputs bit for bit
(under the interpreter the kernel rounds to the e4m3 grid itself, since the interpreter's own cast is wrong off the
grid). The kernels are also compiled ahead of time for sm_90 (Hopper) on the CPU and their machine code checked for
register spills and shared memory. On a CUDA machine one test compares the compiled kernels with the tensor ops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scailflow.scail.fp8_attention import F8, F8_MAX, quantize_qkv
from scailflow.scail.fp8_attention_triton import ENV_SWITCH, fused_available, fused_ready
from tests.support.e4m3 import e4m3_steps
from tests.support.rope import apply_rope

needs_fp8 = pytest.mark.skipif(F8 is None, reason="this torch has no float8 dtypes")

CHILD = r"""
import os, sys
os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
import torch
from scailflow.scail.fp8_attention import quantize_qkv
from scailflow.scail.fp8_attention_triton import fused_ready, quantize_qkv_fused

cases = torch.load(sys.argv[1])
out = {"ready": fused_ready(cases["bf16"]["qkv"][0])}
for name, c in cases.items():
    out[name] = quantize_qkv_fused(*c["qkv"], precast=True, block=32, tiles=2, **c["kw"])
c = cases["bf16"]
out["op"] = quantize_qkv(*c["qkv"], fused=True)  # the custom op, as flash3_attention calls it
torch.save(out, sys.argv[2])
"""


def qkv(seed, B=1, S=200, H=2, D=128, dtype=torch.bfloat16):
    """Transformer-like q, k, v: a few strong channels, an offset on k and v, one all-zero q head."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, S, H, D, generator=g) for _ in range(3))
    ch = torch.randperm(D, generator=g)[:4]
    q[..., ch] *= 12
    k[..., ch] *= 12
    k = k + 3 * torch.randn(B, 1, H, D, generator=g)
    v = v + torch.randn(D, generator=g)
    q[:, :, -1] = 0.0
    return [t.to(dtype) for t in (q, k, v)]


def rope_tables(S, D, seed=5):
    """(cos, sin), each (1, S, 1, D) fp32 with every value repeated for its pair (SCAIL2RotaryPosEmbed's format)."""
    ang = torch.rand(S, D // 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 50
    rep = lambda t: t.float().repeat_interleave(2, -1)[None, :, None, :]  # noqa: E731
    return rep(ang.cos()), rep(ang.sin())


def cases():
    q, k, v = qkv(0)
    fused = torch.randn(1, 200, 3, 2, 128, generator=torch.Generator().manual_seed(9)).bfloat16()
    return {
        "bf16": {"qkv": (q, k, v), "kw": {}},
        "fp32": {"qkv": qkv(1, dtype=torch.float32), "kw": {}},
        "batch2": {"qkv": qkv(2, B=2, S=77, H=3), "kw": {}},
        "plain": {"qkv": (q, k, v), "kw": {"rotate": False, "center": False}},
        "strided": {"qkv": fused.unbind(2), "kw": {}},  # q, k, v views of one packed projection
        "rope": {"qkv": (q, k, v), "kw": {"rope": rope_tables(200, 128)}},
    }


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    d = tmp_path_factory.mktemp("fp8prep")
    cs = cases()
    torch.save(cs, d / "in.pt")
    (d / "child.py").write_text(CHILD)
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != ENV_SWITCH}
    r = subprocess.run(
        [sys.executable, str(d / "child.py"), str(d / "in.pt"), str(d / "out.pt")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return cs, torch.load(d / "out.pt")


def reference(c):
    """The tensor ops' result, pre-cast and cast, for one case (RoPE applied first, as diffusers' processor does)."""
    q, k, v = c["qkv"]
    kw = dict(c["kw"])
    rope = kw.pop("rope", None)
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    return quantize_qkv(q, k, v, fused=False, precast=True, **kw), quantize_qkv(q, k, v, fused=False, **kw)


@pytest.mark.integration
@needs_fp8
@pytest.mark.parametrize("name", ["bf16", "fp32", "batch2", "plain", "strided", "rope"])
def test_interpreted_kernels_match_the_tensor_ops(interpreted, name):
    cs, out = interpreted
    assert out["ready"]
    (rq, rk, rv, rdq, rdk, rdv, rvm), ref8 = reference(cs[name])
    fq, fk, fv, fdq, fdk, fdv, fvm = out[name]
    for d_f, d_r in ((fdq, rdq), (fdk, rdk), (fdv, rdv)):
        assert d_f.shape == d_r.shape and d_f.dtype == torch.float32
        torch.testing.assert_close(d_f, d_r, rtol=1e-6, atol=0)
    torch.testing.assert_close(fvm, rvm, rtol=1e-5, atol=1e-6)
    for x_f, x_r, x8 in zip((fq, fk, fv), (rq, rk, rv), ref8[:3]):
        assert x_f.shape == x_r.shape and x_f.dtype == torch.float32
        torch.testing.assert_close(x_f, x_r, rtol=1e-5, atol=1e-4)  # values up to 448: fp32 rounding at most
        assert x_f.abs().max() <= F8_MAX
        assert e4m3_steps(x_f.to(F8), x8).max() <= 1  # torch's cast of the kernel's values vs the tensor ops'
    if name != "plain":
        assert fvm.abs().max() > 0.1  # centring did happen (v has a per-channel offset)
    if name in ("bf16", "fp32", "rope"):
        assert torch.equal(fq[:, :, -1], torch.zeros_like(fq[:, :, -1]))  # the all-zero head: no division by 0


@pytest.mark.integration
@needs_fp8
def test_the_custom_op_returns_what_flash3_attention_takes(interpreted):
    """fp8 q, k, v in (B, S, H, D), fp32 descales and v mean: the tensor ops' values, the e4m3 ones bit for bit."""
    cs, out = interpreted
    got = out["op"]
    _, ref = reference(cs["bf16"])
    for g, r in zip(got, ref):
        assert g.shape == r.shape and g.dtype == r.dtype
    for g, r in zip(got[3:], ref[3:]):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-7)
    for g, r in zip(got[:3], ref[:3]):
        assert torch.equal(g.view(torch.uint8), r.view(torch.uint8))


def test_fused_path_is_opt_in_and_can_be_switched_off(monkeypatch):
    q = torch.zeros(1, 8, 2, 128)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    assert not fused_ready(q) and not fused_available("cpu")  # the CPU outside the interpreter: the tensor ops
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert fused_ready(q)
    assert not fused_ready(torch.zeros(1, 8, 2, 96))  # head_dim not a power of 2
    assert fused_available("cpu")
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert not fused_ready(q) and not fused_available("cpu")


@needs_fp8
@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled kernels need a CUDA GPU")
def test_compiled_kernels_match_the_tensor_ops_on_cuda():
    for name, c in cases().items():
        if name == "rope":
            continue
        qkv_cuda = [t.cuda() for t in c["qkv"]]
        got = quantize_qkv(*qkv_cuda, fused=True, **c["kw"])
        ref = quantize_qkv(*qkv_cuda, fused=False, **c["kw"])
        # cuBLAS may sum the rotation in another order than the tile dot: a rotated value, and so an amax, one bf16
        # step (2^-7 relative at most) apart
        tol = 1e-2 if c["qkv"][0].dtype == torch.bfloat16 else 1e-5
        for g, r in zip(got[3:], ref[3:]):
            torch.testing.assert_close(g, r, rtol=tol, atol=1e-6)
        for g, r in zip(got[:3], ref[:3]):
            assert e4m3_steps(g, r).max() <= 1, name


HOPPER_SHARED_BYTES = 227 * 1024  # the most shared memory one block may use on sm_90


def _compile_for_sm90(fn, consts, x_type):
    """Compile one kernel for sm_90 without a GPU (triton.compile with a GPUTarget, then ptxas); returns (shared
    memory bytes, cuobjdump's resource usage line)."""
    import shutil
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from scailflow.scail import fp8_attention_triton as m

    types = {"x_ptr": x_type, "h_ptr": x_type, "o_ptr": "*fp8e4nv"}
    sig = {}
    for name in fn.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        else:
            sig[name] = types.get(name, "*fp32") if name.endswith("_ptr") else "i32"
    opts = {"num_warps": m.NUM_WARPS, "num_stages": m.NUM_STAGES}
    k = triton.compile(
        ASTSource(fn=fn, signature=sig, constexprs=consts), target=GPUTarget("cuda", 90, 32), options=opts
    )
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not cuobjdump.exists():
        cuobjdump = shutil.which("cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", f.name], capture_output=True, text=True)
    line = next(x for x in usage.stdout.splitlines() if "REG:" in x)
    return k.metadata.shared, line


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("tensor", ["q", "k", "v"])
def test_kernels_compile_for_hopper_without_spilling(tensor):
    """What the GPU will run, as far as a machine without one can check: each pass of the default launch shape,
    for q (rotated), k (rotated, centred) and v (centred), compiles for sm_90 to machine code that keeps its
    values in registers (no stack) and fits Hopper's shared memory."""
    import re

    from scailflow.scail import fp8_attention_triton as m

    flags = {"q": (True, False), "k": (True, True), "v": (False, True)}[tensor]
    c = dict(
        D=128, BLOCK=m.BLOCK_L, TILES=m.TILES_PER_CHUNK, ROPE=False, ROTATE=flags[0], CENTER=flags[1], UPCAST=False
    )
    for fn, consts in ((m._stats_kernel, c), (m._cast_kernel, dict(c, F8_LIMIT=F8_MAX, ROUND_E4M3=False))):
        shared, usage = _compile_for_sm90(fn, consts, "*bf16")
        assert shared <= HOPPER_SHARED_BYTES, (fn.__name__, shared)
        assert re.search(r"STACK:0\b", usage) and re.search(r"LOCAL:0\b", usage), (fn.__name__, usage)
