"""ComfyUI's pose knobs (WanSCAILToVideo's pose_strength, pose_start, pose_end) for our sampler.

- strength scales the pose video's VAE latent before it is normalised, as ComfyUI scales `vae.encode(...)`; our
  latents are normalised ((z - mean) / std), so s*z becomes s*n + (s - 1) * mean / std;
- the window is a fraction of the schedule: step i of N conditions on the pose when start <= i / N <= end (ComfyUI
  compares the step's unshifted sigma with its percent range the same way). Outside the window the pose latent is
  zero; the driving masks still bind the identities. (ComfyUI leaves the pose input out there instead.)

The defaults (1, 0, 1) change nothing: the official output stays bit-identical.
"""

from __future__ import annotations

import torch


def scale_pose(pose_latents: torch.Tensor, strength: float, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The normalised pose latent of `strength` times the raw one (`mean`, `std`: the VAE's latent statistics)."""
    if strength == 1.0:
        return pose_latents
    return pose_latents * strength + (strength - 1.0) * mean / std


def pose_active(step: int, steps: int, start: float, end: float) -> bool:
    """Whether step `step` (0-based) of `steps` is inside the pose window [start, end] (fractions of the schedule)."""
    if start <= 0.0 and end >= 1.0:
        return True
    progress = step / steps
    return start <= progress <= end
