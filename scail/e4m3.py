"""The e4m3 format and the Hadamard rotation that fp8 attention builds on (scail/fp8_attention.py, the tensor ops;
scail/fp8_attention_triton.py, the fused kernels)."""

from __future__ import annotations

import math

import torch

F8 = getattr(torch, "float8_e4m3fn", None)
F8_MAX = 448.0


def hadamard(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The n x n orthonormal Sylvester Hadamard matrix (n a power of 2): H[i, j] = (-1)^popcount(i & j) / sqrt(n).
    Built from tensor ops (no host round trip), so it traces under torch.compile."""
    if n <= 0 or n & (n - 1):
        raise ValueError(f"Hadamard size must be a power of 2, not {n}")
    idx = torch.arange(n, device=device)
    bits = idx[:, None] & idx[None, :]
    parity = torch.zeros_like(bits)
    for b in range(max(1, n.bit_length() - 1)):
        parity = parity ^ ((bits >> b) & 1)
    return ((1 - 2 * parity).to(dtype)) / math.sqrt(n)


def to_e4m3(x: torch.Tensor) -> torch.Tensor:
    """Saturating cast to float8 e4m3 (torch's plain cast turns values past 448 into NaN)."""
    return x.clamp(-F8_MAX, F8_MAX).to(F8)
