"""Sampling options, presets and mode names: plain data, importable without torch (the CLI parses with them)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from scailflow.errors import InputError

SOLVERS = ("unipc", "dpm++")
OFFLOAD_MODES = ("none", "model", "block")
PRESETS = {
    "quality": dict(steps=40, shift=3.0, guidance=5.0, solver="unipc"),
    # the lightx2v step/cfg distill LoRA (rank 128) is what makes 8 steps without CFG work
    "fast": dict(steps=8, shift=1.0, guidance=1.0, solver="unipc"),
}


@dataclass
class SamplingOptions:
    """The official generate.py's sampling options."""

    steps: int = 40
    shift: float = 3.0
    guidance: float = 5.0
    solver: str = "unipc"
    seed: int = -1  # -1: random, chosen and recorded
    negative_prompt: str = ""
    segment_frames: int = 81
    overlap_frames: int = 5
    keep_tail: bool = False  # the official code drops trailing frames that do not fill a segment
    # conditional and unconditional passes as one batch of 2: measured no faster on an H100 at 48,832 tokens and
    # 5.6 GiB more memory, so the two passes run one after the other by default
    cfg_batch: bool = False

    def check(self) -> None:
        if self.solver not in SOLVERS:
            raise InputError(f"unknown solver {self.solver!r}; choose one of {', '.join(SOLVERS)}")
        if self.steps < 1:
            raise InputError("steps must be at least 1")
        if self.shift <= 0:
            raise InputError("shift must be > 0")

    def to_dict(self) -> dict:
        return asdict(self)


