"""The RoPE of diffusers' Wan attention processor as tensor ops (it is nested inside the processor there): the
reference the fused fp8 kernels' in-kernel RoPE is checked and timed against (tests and bench/bench_fp8_prep.py)."""

from __future__ import annotations

import torch


def apply_rope(x, cos, sin):
    """diffusers' Wan rotary on (B, S, H, D): pairs (2i, 2i+1) as complex numbers, fp32 products, input dtype out."""
    x1, x2 = x[..., 0::2].float(), x[..., 1::2].float()
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], -1).flatten(-2).to(x.dtype)
