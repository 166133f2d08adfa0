"""Flow-matching schedulers configured to reproduce the official SCAIL-2 / Wan sigmas and timesteps.

diffusers' default `set_timesteps(steps)` is off by one step from the official schedule; passing the official
unshifted sigmas (linspace(0.999, 0, steps+1)[:-1], a numpy array) lets diffusers apply the shift itself and
gives the official integer timesteps exactly.

Euler (not in the official code; ComfyUI's SCAIL-2 template samples with it): diffusers' FlowMatchEulerDiscreteScheduler
on ComfyUI's "simple" schedule for flow models, the shifted linspace(1, 0, steps+1)[:-1] then 0, with float timesteps
sigma * 1000 (ComfyUI floors the unshifted sigmas to its 1000-entry table: at most 1e-3 apart).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from scailflow.scail.options import SOLVERS

SIGMA_MAX = 1.0 - 1.0 / 1000


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """sigma' = s*sigma / (1 + (s-1)*sigma)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def make_scheduler(solver: str, steps: int, shift: float, device=None):
    """A diffusers scheduler set to the official schedule for `steps` steps (its `.timesteps` are the official ones)."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if solver == "unipc":
        sched = UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=shift,
            solver_order=2,
            num_train_timesteps=1000,
        )
        sched.set_timesteps(sigmas=np.linspace(SIGMA_MAX, 0.0, steps + 1)[:-1], device=device)
    elif solver == "dpm++":
        sched = DPMSolverMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=shift,
            algorithm_type="dpmsolver++",
            solver_order=2,
            num_train_timesteps=1000,
        )
        # diffusers' DPM++ takes no sigmas: set the official ones (shifted linspace(1, 0), final 0) after it.
        sched.set_timesteps(steps, device=device)
        sigmas = shift_sigmas(np.linspace(1.0, 0.0, steps + 1)[:-1], shift)
        sched.sigmas = torch.from_numpy(np.append(sigmas, 0.0)).to(torch.float32)
        sched.timesteps = torch.from_numpy((sigmas * 1000).astype(np.int64)).to(device)
    elif solver == "euler":
        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
        sched.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1], device=device)
    else:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    return sched
