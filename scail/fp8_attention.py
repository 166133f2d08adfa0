"""fp8 (e4m3) self-attention inputs for FlashAttention 3: rotation, centring and per-head scales, plus a CPU
emulation of the kernel's arithmetic (the reference the tests and the GPU smoke check compare against).

The recipe, all exact rewrites of attention before rounding (only the e4m3 rounding error changes):
- q and k are rotated by the orthonormal Hadamard matrix along head_dim: (q H)(k H)^T = q k^T. It spreads a few
  outlier channels over all 128, so no single product carries the dot product and e4m3's 2^-4 relative rounding
  averages out (the FA3 paper's "incoherent processing"; torchao's low-precision attention does the same).
- k loses its mean over tokens (per head and channel): every score of a query row shifts by the same amount, which
  softmax ignores. v loses its mean too and gets it back on the output (rows of P sum to 1).
- one fp32 descale per (batch, head), FA3's (B, H_k) descale layout: amax / 448 of what is cast, i.e. after the
  rotation and the centring. The token mean, max and min of each channel come from one pass, and the centred amax
  is max(max - mean, mean - min): exact, with no second pass (a bound such as amax|k| + amax|mean| would waste most
  of e4m3's range where an offset dominates, as it does once the rotation gathers it into one channel).
Written as plain tensor ops so that torch.compile fuses the reductions and casts with the RoPE / RMSNorm work that
produces q and k (the rotation is one bf16 matmul per tensor). With `SCAILFLOW_FP8_TRITON=1` on CUDA,
`quantize_qkv` runs the same numbers as two fused Triton passes per tensor instead (scail/fp8_attention_triton.py,
opt-in until checked and timed on a GPU); these ops stay the reference it is checked against.
"""

from __future__ import annotations

import torch

from scailflow.scail.e4m3 import F8, F8_MAX, hadamard, to_e4m3  # noqa: F401 - re-exported for callers

P_OFFSET = 256.0  # FA3 scales P by 2^8 (Max_offset 8) before casting it to e4m3


def _descale(amax: torch.Tensor) -> torch.Tensor:
    return (amax.float() / F8_MAX).clamp_min(1e-12)


def _column_stats(x: torch.Tensor, center: bool):
    """Per (batch, head, channel) over the tokens, in one pass: (mean or None, amax of x - mean, per (B, H)).

    max |x - m| over tokens is max(max x - m, m - min x): the mean, the max and the min share one reduction loop,
    so the amax of the centred tensor needs no second pass over it."""
    hi, lo = x.amax(dim=1), x.amin(dim=1)  # (B, H, D)
    if not center:
        return None, torch.maximum(hi, -lo).amax(dim=-1)
    m = x.mean(dim=1)
    return m[:, None], torch.maximum(hi - m, m - lo).amax(dim=-1)


def fused_wanted(q: torch.Tensor) -> bool:
    """The fused Triton preparation (scail/fp8_attention_triton.py) runs for this q: on CUDA, with triton, when
    SCAILFLOW_FP8_TRITON=1 (opt-in until the compiled kernels are checked on a GPU)."""
    if not q.is_cuda:
        return False
    from scailflow.scail.fp8_attention_triton import fused_ready

    return fused_ready(q)


def quantize_qkv(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rotate: bool = True,
    center: bool = True,
    fused: bool | None = None,
    precast: bool = False,
):
    """(q8, k8, v8, q_descale, k_descale, v_descale, v_mean) from bf16/fp32 q, k, v of shape (B, S, H, D).

    x8 * descale[b, h] ~= the rotated / centred x; descales are fp32 (B, H); v_mean (B, 1, H, D) fp32 is to be added
    to the attention output (zero when `center` is False). `fused`: the same numbers from the Triton kernels of
    scail/fp8_attention_triton.py (None: where `fused_wanted`); False: these tensor ops. `precast` (tensor ops
    only): the x8 are the fp32 values just before the e4m3 cast, clamped to +-448 (what the kernels are checked
    against)."""
    if fused is None:
        fused = not precast and fused_wanted(q)
    if fused:
        from scailflow.scail.fp8_attention_triton import fp8_qkv_prep

        return fp8_qkv_prep(q, k, v, rotate, center, None, None)
    cast = (lambda x: x.clamp(-F8_MAX, F8_MAX)) if precast else to_e4m3
    d = q.shape[-1]
    if rotate and d & (d - 1) == 0:
        h = hadamard(d, q.device, q.dtype)
        q, k = q @ h, k @ h
    qf, kf, vf = q.float(), k.float(), v.float()
    _, q_amax = _column_stats(qf, False)
    k_mean, k_amax = _column_stats(kf, center)
    v_mean, v_amax = _column_stats(vf, center)
    if center:
        kf, vf = kf - k_mean, vf - v_mean
    else:
        v_mean = torch.zeros_like(vf[:, :1])
    dq, dk, dv = _descale(q_amax), _descale(k_amax), _descale(v_amax)
    q8 = cast(qf / dq[:, None, :, None])
    k8 = cast(kf / dk[:, None, :, None])
    v8 = cast(vf / dv[:, None, :, None])
    return q8, k8, v8, dq, dk, dv, v_mean


def emulate_fa3(
    q, k, v, softmax_scale=None, q_descale=None, k_descale=None, v_descale=None, return_attn_probs=False, **_
):
    """FA3's forward arithmetic on any device, for tests and checks: same signature as `flash_attn_func`, (B, S, H, D).

    fp8 inputs: scores from the exact e4m3 products (fp32), scaled by softmax_scale * q_descale * k_descale;
    P = exp(S - rowmax) * 2^8 rounded to e4m3 for the P.V product while the row sum uses the unrounded P;
    output * v_descale, in bf16 (the kernel's output dtype for fp8). bf16/fp32 inputs: exact attention in fp32,
    output in the input dtype. (The kernel's running max over key blocks only moves where P is rounded.)"""
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    fp8 = q.dtype == F8
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))  # (B, H, S, D)
    s = qf @ kf.transpose(-1, -2) * scale
    if fp8:
        ones = torch.ones(q.shape[0], q.shape[2], device=q.device)
        dq, dk, dv = (ones if d is None else d.float() for d in (q_descale, k_descale, v_descale))
        s = s * (dq * dk)[:, :, None, None]
    m = s.amax(dim=-1, keepdim=True)
    p = torch.exp(s - m)
    rowsum = p.sum(dim=-1, keepdim=True)
    if fp8:
        p = to_e4m3(p * P_OFFSET).float() / P_OFFSET
    out = (p @ vf) / rowsum
    if fp8:
        out = out * dv[:, :, None, None]
    out = out.transpose(1, 2).to(torch.bfloat16 if fp8 else q.dtype)
    if return_attn_probs:
        return out, (m + torch.log(rowsum)).squeeze(-1)
    return out
