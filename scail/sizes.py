"""The official SCAIL-2 size rules as plain arithmetic (no torch): the size generated from a target and the reference,
and the size a picture is cover-resized to before the centre crop. scail/conditioning.py applies them to tensors;
`scailflow estimate`, `export comfyui` and `--dry-run` use them without loading torch."""

from __future__ import annotations


def target_size(target_h: int, target_w: int, ref_hw: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) generated: the target, swapped when the reference is portrait and the target landscape
    or the reverse (official rule: a square reference or a square target never swaps)."""
    h, w = ref_hw
    if (h < w and target_h > target_w) or (h > w and target_h < target_w):
        return target_w, target_h
    return target_h, target_w


def cover_size(h: int, w: int, target_h: int, target_w: int) -> tuple[int, int]:
    """Size an (h, w) picture is resized to before the centre crop: one side equals the target, the other covers it
    (truncated with int(), as the official code does: 200x120 into 96x64 gives 106x64)."""
    if w / h > target_w / target_h:
        return target_h, int(w * target_h / h)
    return int(h * target_w / w), target_w
