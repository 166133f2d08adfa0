"""Turning prepared-folder pixels into model inputs: cover-resize, [-1,1] scaling and 28-channel masks.

Masks carry no VAE: each RGB frame becomes seven exclusive colour maps (white, red, green, blue, yellow, magenta,
cyan), area-downsampled to the latent grid and grouped four frames per latent frame (first frame repeated 4x).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# a channel is "on" above this value on the [-1, 1] scale: pixel 226 is on, 225 is off
MASK_THRESHOLD = (225 - 127.5) / 127.5


def to_unit_range(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [T, H, W, 3] (or [H, W, 3]) -> float32 [3, T, H, W] in [-1, 1]."""
    x = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    if x.ndim == 3:
        x = x[None]
    return x.permute(3, 0, 1, 2).to(torch.float32) / 127.5 - 1.0


def cover_resize(video: torch.Tensor, height: int, width: int, mode: str = "bicubic") -> torch.Tensor:
    """Resize [C, T, H, W] to cover (height, width) keeping aspect, then centre-crop to it."""
    c, t, h, w = video.shape
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    frames = video.permute(1, 0, 2, 3)
    if (nh, nw) != (h, w):
        kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        frames = torch.cat([F.interpolate(frames[i : i + 16], size=(nh, nw), mode=mode, **kw) for i in range(0, t, 16)])
    top, left = (nh - height) // 2, (nw - width) // 2
    return frames[:, :, top : top + height, left : left + width].permute(1, 0, 2, 3).contiguous()


def half_size(video: torch.Tensor) -> torch.Tensor:
    """0.5x bilinear downscale of [C, T, H, W] (the driving video and its mask enter the model at half size)."""
    frames = video.permute(1, 0, 2, 3)
    frames = F.interpolate(frames, scale_factor=0.5, mode="bilinear", align_corners=False)
    return frames.permute(1, 0, 2, 3).contiguous()


def _latent_side(n: int) -> int:
    for _ in range(3):
        n = (n + 1) // 2
    return n


def colour_maps(video: torch.Tensor) -> torch.Tensor:
    """[3, T, H, W] in [-1, 1] -> [T, 7, H, W] float maps: white, red, green, blue, yellow, magenta, cyan."""
    on = video.to(torch.float32) > MASK_THRESHOLD
    r, g, b = on[0], on[1], on[2]
    nr, ng, nb = ~r, ~g, ~b
    maps = [r & g & b, r & ng & nb, nr & g & nb, nr & ng & b, r & g & nb, r & ng & b, nr & g & b]
    return torch.stack(maps, 1).to(torch.float32)


def masks_to_28ch(frames: np.ndarray | torch.Tensor, *, half: bool = False) -> torch.Tensor:
    """Mask frames -> the model's 28-channel mask latent [28, T_lat, h, w].

    `frames` is uint8 [T, H, W, 3] or float [3, T, H, W] in [-1, 1] (already at the target size). The frame
    count must be 4k+1 (a single reference frame is 1). `half=True` first applies the driving path's 0.5x
    bilinear downscale.
    """
    video = to_unit_range(frames) if (not isinstance(frames, torch.Tensor) or frames.dtype == torch.uint8) else frames
    if half:
        video = half_size(video)
    _, t, h, w = video.shape
    if (t - 1) % 4:
        raise ValueError(f"mask frame count must be 4k+1, got {t}")
    maps = colour_maps(video)
    maps = F.interpolate(maps, size=(_latent_side(h), _latent_side(w)), mode="area")
    maps = torch.cat([maps[:1].expand(3, -1, -1, -1), maps])  # first frame 4x in all
    t_lat = maps.shape[0] // 4
    return maps.reshape(t_lat, 4 * 7, *maps.shape[-2:]).permute(1, 0, 2, 3).contiguous()
