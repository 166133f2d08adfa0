"""How far apart two e4m3 tensors are, for the fp8 kernel tests and bench/bench_fp8_prep.py."""

from __future__ import annotations

import torch


def e4m3_steps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How many e4m3 grid steps apart two e4m3 tensors are, element by element (sign-magnitude codes)."""

    def order(t):
        bits = t.view(torch.uint8).int()
        mag = bits & 0x7F
        return torch.where(bits >= 0x80, -mag, mag)

    return (order(a) - order(b)).abs()
