"""Fused fp8 (e4m3) q/k/v preparation for FlashAttention 3 in Triton: the numbers of scail/fp8_attention.py's
`quantize_qkv` (same rotation, centring, descale definition and saturating cast) in two passes over each tensor
instead of the separate rotation, reduction and cast passes of the tensor ops.

Per tensor (q, k, v), for each (batch, head):
1. `_stats_kernel`, grid (batch x heads, chunks of 16 tiles of 64 tokens): loads a tile of tokens x head_dim,
   optionally applies RoPE (diffusers' Wan arithmetic: fp32 products, rounded to the input dtype), rotates it by the
   orthonormal Hadamard matrix (one tile x 128 x 128 `tl.dot`, fp32 accumulation, rounded to the input dtype as
   `q @ h` is), and keeps the per-channel max, min and (when centring) sum over its chunk of tokens.
2. a tiny torch reduction of those partials (chunks x batch x heads x 3 x head_dim fp32): the token mean per
   channel and one descale per (batch, head), amax / 448 of what is cast, amax = max(max - mean, mean - min) --
   the definition and the fp32 ops of the tensor-ops path.
3. `_cast_kernel`, same grid: recomputes the same rotated tiles (cheaper than writing and reading them back),
   subtracts the mean, divides by the descale (IEEE division, as torch's `/`), clamps to +-448 and casts to e4m3
   (round to nearest even), written in the (B, S, H, D) layout FA3 takes.
Each input is read twice and each e4m3 output written once (3 x 5 bytes per element of q, k, v); no rotated copy
reaches memory. RoPE inside the kernel (`rope=`) is there for eager callers; the model does not use it: diffusers'
processor applies RoPE before the attention call, and under torch.compile RoPE is fused with the q/k norm that
produces the tensor, so moving it here would save no pass.

The whole preparation is one torch custom op (`scailflow::fp8_qkv_prep`), so torch.compile keeps it as one opaque
call. `quantize_qkv` runs it where `fused_ready(q)` holds: a CUDA tensor on a GPU with e4m3 (compute capability
8.9+), triton importable, head_dim a power of 2 in [16, 256], and `SCAILFLOW_FP8_TRITON=1`. Opt-in until the
compiled kernels have been checked and timed on a GPU (the CUDA test and bench/bench_fp8_prep.py); then the default
can flip.

Verified on the CPU only, under Triton's interpreter (`TRITON_INTERPRET=1`, tests/test_fp8_attention_triton.py):
against the tensor ops, the rotated pre-cast values, means, descales and e4m3 outputs agree (bit for bit on the test
sizes, including tokens not a multiple of the tile, a batch of 2, strided views, RoPE). Two interpreter faults are
worked around in ways that compute the same numbers as the GPU: its `tl.dot` on bf16 operands multiplies the raw
16-bit patterns (so `upcast` widens the operands to fp32 when interpreting: the same exact products and fp32
accumulation as the tensor-core bf16 dot), and its float downcasts truncate or carry wrongly (so the bf16 rounding
is done on the bits, on both, and under the interpreter the values are rounded to the e4m3 grid before its cast,
which is exact on the grid; the GPU casts in hardware, round to nearest even like torch). The compiled kernels
have not run here: the CUDA test in that file and bench/bench_fp8_prep.py (timings against the tensor ops at
48,832 tokens x 40 heads, and the same agreement checks) are for a GPU session. Its speed is unmeasured.
"""

from __future__ import annotations

import os

import torch

from scailflow.scail.e4m3 import F8, F8_MAX, hadamard

try:
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - no triton (or a broken one): the torch path runs
    triton = None

ENV_SWITCH = "SCAILFLOW_FP8_TRITON"  # "1" turns the fused kernels on (on a GPU; opt-in until run on one)
# Launch shape. Compiled ahead of time for sm_90 on a CPU (triton.compile with a GPUTarget; cuobjdump's resource
# usage): 64-token tiles at 8 warps need 171-255 registers a thread and no spill in every variant (RoPE and
# centring on or off) and at most 176 KiB of shared memory at 3 stages; 128-token tiles spill. Not timed yet:
# bench/bench_fp8_prep.py sweeps these on a GPU.
BLOCK_L = 64  # tokens per tile
TILES_PER_CHUNK = 16  # tiles one program walks (48,832 tokens x 40 heads -> 48 x 40 programs per pass)
NUM_WARPS = 8
NUM_STAGES = 3


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def fused_available(device) -> bool:
    """The fused kernels run on `device`: a CUDA GPU with e4m3 (compute capability 8.9+) with SCAILFLOW_FP8_TRITON=1,
    or Triton's interpreter (unless SCAILFLOW_FP8_TRITON=0); triton present."""
    switch = os.environ.get(ENV_SWITCH, "")
    if triton is None or switch == "0":
        return False
    device = torch.device(device)
    if device.type != "cuda":
        return interpreting()
    if switch != "1":
        return False
    # asked outside compiled code (inside it this is the path FA3 fp8 runs, on compute capability 9.0)
    return torch.compiler.is_compiling() or torch.cuda.get_device_capability(device) >= (8, 9)


def fused_ready(q: torch.Tensor) -> bool:
    """`fused_available` on q's device, and a q the tiles take: (B, S, H, D), D a power of 2 in [16, 256], bf16 on
    a GPU (what the model runs; fp32 there would take the slow exact-fp32 dot, fine under the interpreter only)."""
    d = q.shape[-1]
    if q.is_cuda and q.dtype != torch.bfloat16:
        return False
    return q.dim() == 4 and d & (d - 1) == 0 and 16 <= d <= 256 and fused_available(q.device)


if triton is not None:

    @triton.jit
    def _round_to(y, dt: tl.constexpr):
        """fp32 y rounded to dt's precision (nearest even), kept in fp32. bf16 is done on the bits, one code path
        for the GPU and for Triton's interpreter (whose float downcasts truncate)."""
        if dt == tl.bfloat16:
            bits = y.to(tl.uint32, bitcast=True)
            bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & 0xFFFF0000
            return bits.to(tl.float32, bitcast=True)
        elif dt == tl.float32:
            return y
        else:
            return y.to(dt).to(tl.float32)

    @triton.jit
    def _e4m3_grid(y):
        """fp32 y (|y| <= 448) rounded to the nearest e4m3 value, ties to even, kept in fp32: normal values keep 3
        mantissa bits (on the bits; a carry moves the exponent), subnormals (below 2^-6) are multiples of 2^-9
        (fp32 addition of 2^14 to |y| rounds there; the sign is put back). Used under the interpreter only, whose own e4m3 cast is right for
        values already on the grid and wrong otherwise; the GPU casts in hardware."""
        bits = y.to(tl.uint32, bitcast=True)
        normal = ((bits + (0x7FFFF + ((bits >> 20) & 1))) & 0xFFF00000).to(tl.float32, bitcast=True)
        sub = ((tl.abs(y) + 16384.0) - 16384.0).to(tl.uint32, bitcast=True) | (bits & 0x80000000)
        sub = sub.to(tl.float32, bitcast=True)
        return tl.where(tl.abs(y) < 0.015625, sub, normal)

    @triton.jit
    def _prep_tile(
        x_ptr,
        cos_ptr,
        sin_ptr,
        hm,
        b,
        h,
        tok,
        lmask,
        sxb,
        sxl,
        sxh,
        scl,
        D: tl.constexpr,
        ROPE: tl.constexpr,
        ROTATE: tl.constexpr,
        UPCAST: tl.constexpr,
    ):
        """One tile [BLOCK_L, D] of x[b, l, h, :] as fp32 values of the input dtype: RoPE, then the rotation."""
        d = tl.arange(0, D)
        base = x_ptr + b * sxb + h * sxh + tok[:, None] * sxl
        m2 = lmask[:, None]
        x = tl.load(base + d[None, :], mask=m2, other=0.0)
        dt = x.dtype
        xf = x.to(tl.float32)
        if ROPE:
            # diffusers' Wan rotary: even out = x1 cos - x2 sin, odd out = x1 sin + x2 cos (pairs (2i, 2i+1)), fp32
            partner = tl.load(base + (d ^ 1)[None, :], mask=m2, other=0.0).to(tl.float32)
            c = tl.load(cos_ptr + tok[:, None] * scl + d[None, :], mask=m2, other=0.0)
            s = tl.load(sin_ptr + tok[:, None] * scl + d[None, :], mask=m2, other=0.0)
            sign = tl.where((d % 2) == 0, -1.0, 1.0)[None, :]
            xf = _round_to(xf * c + sign * (partner * s), dt)
        if ROTATE:
            if UPCAST:
                acc = tl.dot(xf, hm.to(tl.float32), input_precision="ieee")
            else:
                acc = tl.dot(xf.to(dt), hm)
            xf = _round_to(acc, dt)
        return xf

    @triton.jit
    def _stats_kernel(
        x_ptr,
        cos_ptr,
        sin_ptr,
        h_ptr,
        part_ptr,
        L,
        H,
        sxb,
        sxl,
        sxh,
        scl,
        D: tl.constexpr,
        BLOCK: tl.constexpr,
        TILES: tl.constexpr,
        ROPE: tl.constexpr,
        ROTATE: tl.constexpr,
        CENTER: tl.constexpr,
        UPCAST: tl.constexpr,
    ):
        """Per (batch x head, chunk): max, min and sum over the chunk's tokens of each channel of the prepared x,
        written to part[chunk, b * H + h, 0 | 1 | 2, :]."""
        bh = tl.program_id(0)
        chunk = tl.program_id(1)
        b = bh // H
        h = bh % H
        d = tl.arange(0, D)
        if ROTATE:
            hm = tl.load(h_ptr + d[:, None] * D + d[None, :])
        else:
            hm = h_ptr  # never read
        hi = tl.full([D], float("-inf"), tl.float32)
        lo = tl.full([D], float("inf"), tl.float32)
        sm = tl.zeros([D], tl.float32)
        for t in range(TILES):
            tok = (chunk * TILES + t) * BLOCK + tl.arange(0, BLOCK)
            lmask = tok < L
            y = _prep_tile(x_ptr, cos_ptr, sin_ptr, hm, b, h, tok, lmask, sxb, sxl, sxh, scl, D, ROPE, ROTATE, UPCAST)
            m2 = lmask[:, None]
            hi = tl.maximum(hi, tl.max(tl.where(m2, y, float("-inf")), axis=0))
            lo = tl.minimum(lo, tl.min(tl.where(m2, y, float("inf")), axis=0))
            if CENTER:
                sm += tl.sum(tl.where(m2, y, 0.0), axis=0)
        out = part_ptr + (chunk * tl.num_programs(0) + bh) * 3 * D + d
        tl.store(out, hi)
        tl.store(out + D, lo)
        tl.store(out + 2 * D, sm)

    @triton.jit
    def _cast_kernel(
        x_ptr,
        cos_ptr,
        sin_ptr,
        h_ptr,
        mean_ptr,
        descale_ptr,
        o_ptr,
        L,
        H,
        sxb,
        sxl,
        sxh,
        scl,
        D: tl.constexpr,
        BLOCK: tl.constexpr,
        TILES: tl.constexpr,
        ROPE: tl.constexpr,
        ROTATE: tl.constexpr,
        CENTER: tl.constexpr,
        UPCAST: tl.constexpr,
        F8_LIMIT: tl.constexpr,
        ROUND_E4M3: tl.constexpr,
    ):
        """out[b, l, h, :] = clamp((prepared x - mean[b, h]) / descale[b, h], +-448) in o's dtype (e4m3; fp32 for
        the pre-cast values the interpreter tests read)."""
        bh = tl.program_id(0)
        b = bh // H
        h = bh % H
        d = tl.arange(0, D)
        if ROTATE:
            hm = tl.load(h_ptr + d[:, None] * D + d[None, :])
        else:
            hm = h_ptr  # never read
        if CENTER:
            mean = tl.load(mean_ptr + bh * D + d)[None, :]
        descale = tl.load(descale_ptr + bh)
        for t in range(TILES):
            tok = (tl.program_id(1) * TILES + t) * BLOCK + tl.arange(0, BLOCK)
            lmask = tok < L
            y = _prep_tile(x_ptr, cos_ptr, sin_ptr, hm, b, h, tok, lmask, sxb, sxl, sxh, scl, D, ROPE, ROTATE, UPCAST)
            if CENTER:
                y = y - mean
            y = tl.math.div_rn(y, descale)
            y = tl.minimum(tl.maximum(y, -F8_LIMIT), F8_LIMIT)
            if ROUND_E4M3:
                y = _e4m3_grid(y)
            o = o_ptr + ((b * L + tok[:, None]) * H + h) * D + d[None, :]
            tl.store(o, y.to(o_ptr.dtype.element_ty), mask=lmask[:, None])


_HADAMARD: dict = {}


def _hadamard(d: int, device, dtype) -> torch.Tensor:
    key = (d, str(device), dtype)
    if key not in _HADAMARD:
        _HADAMARD[key] = hadamard(d, device, dtype).contiguous()
    return _HADAMARD[key]


def _prepare_one(x, rope, rotate, center, out_dtype, block, tiles, warps, stages):
    """(x8 (B, S, H, D) in out_dtype, descale (B, H) fp32, mean (B, H, D) fp32 or None) for one tensor."""
    B, L, H, D = x.shape
    upcast = interpreting() or x.dtype == torch.float32
    hm = _hadamard(D, x.device, x.dtype) if rotate else x  # rotate off: the kernels read no matrix (any pointer)
    if rope is not None:
        cos, sin = (t.reshape(t.shape[-3], D).to(torch.float32).contiguous() for t in rope)
        scl = cos.stride(0)
    else:
        cos = sin = x
        scl = 0
    n_chunks = triton.cdiv(L, block * tiles)
    part = torch.empty(n_chunks, B * H, 3, D, device=x.device, dtype=torch.float32)
    strides = (x.stride(0), x.stride(1), x.stride(2), scl)
    flags = dict(D=D, BLOCK=block, ROPE=rope is not None, ROTATE=rotate, CENTER=center, UPCAST=upcast)
    _stats_kernel[(B * H, n_chunks)](
        x, cos, sin, hm, part, L, H, *strides, TILES=tiles, **flags, num_warps=warps, num_stages=stages
    )
    hi, lo = part[:, :, 0].amax(0), part[:, :, 1].amin(0)  # (B*H, D)
    if center:
        mean = part[:, :, 2].sum(0) / L
        amax = torch.maximum(hi - mean, mean - lo).amax(-1)
    else:
        mean = None
        amax = torch.maximum(hi, -lo).amax(-1)
    descale = (amax / F8_MAX).clamp_min(1e-12)
    out = torch.empty(B, L, H, D, device=x.device, dtype=out_dtype)
    mean_arg = mean if mean is not None else descale
    grid = (B * H, n_chunks)
    round_e4m3 = interpreting() and out_dtype == F8
    _cast_kernel[grid](
        x,
        cos,
        sin,
        hm,
        mean_arg,
        descale,
        out,
        L,
        H,
        *strides,
        F8_LIMIT=F8_MAX,
        TILES=tiles,
        ROUND_E4M3=round_e4m3,
        num_warps=warps,
        num_stages=stages,
        **flags,
    )
    return out, descale.view(B, H), None if mean is None else mean.view(B, H, D)


def quantize_qkv_fused(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rotate: bool = True,
    center: bool = True,
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    precast: bool = False,
    block: int = BLOCK_L,
    tiles: int = TILES_PER_CHUNK,
    warps: int = NUM_WARPS,
    stages: int = NUM_STAGES,
):
    """`quantize_qkv`'s result (q8, k8, v8, q_descale, k_descale, v_descale, v_mean) from the fused kernels.

    `rope` (cos, sin), each (1, S, 1, D) with every value repeated for its pair (SCAIL2RotaryPosEmbed's output):
    q and k are given before RoPE and it is applied in the kernel. `precast`: the x8 are the fp32 values just
    before the e4m3 cast (for checks under Triton's interpreter, whose fp8 cast is wrong)."""
    if triton is None:
        raise RuntimeError("the fused fp8 preparation needs triton")
    B, S, H, D = v.shape
    out_dtype = torch.float32 if precast else F8
    launch = (block, tiles, warps, stages)
    q8, dq, _ = _prepare_one(q, rope, rotate, False, out_dtype, *launch)
    k8, dk, _ = _prepare_one(k, rope, rotate, center, out_dtype, *launch)
    v8, dv, vm = _prepare_one(v, None, False, center, out_dtype, *launch)
    v_mean = vm[:, None] if center else torch.zeros(B, 1, H, D, device=v.device, dtype=torch.float32)
    return q8, k8, v8, dq, dk, dv, v_mean


# torch.compile sees one opaque op (its shapes from the fake below) instead of tracing the launches
@torch.library.custom_op("scailflow::fp8_qkv_prep", mutates_args=())
def fp8_qkv_prep(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rotate: bool,
    center: bool,
    cos: torch.Tensor | None,
    sin: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    rope = None if cos is None or sin is None else (cos, sin)
    return quantize_qkv_fused(q, k, v, rotate=rotate, center=center, rope=rope)


@fp8_qkv_prep.register_fake
def _(q, k, v, rotate, center, cos, sin):
    B, S, H, D = v.shape
    f8 = [torch.empty(t.shape, device=t.device, dtype=F8) for t in (q, k, v)]
    scales = [torch.empty(t.shape[0], t.shape[2], device=t.device, dtype=torch.float32) for t in (q, k, v)]
    return (*f8, *scales, torch.empty(B, 1, H, D, device=v.device, dtype=torch.float32))
