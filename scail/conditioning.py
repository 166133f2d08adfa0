"""Turning prepared-folder pixels into model inputs exactly as the official SCAIL-2 code does, and frames back out.

The official path (wan-scail2 `generate.py` + `wan/scail.py` + `scail_utils.py`), step for step:

- target size: swapped when the reference's orientation differs from the target's (`target_size`);
- every picture is cover-resized with torchvision's bicubic resize (antialiased, as torchvision does for tensors),
  the resized side truncated with int(), then centre-cropped (`resize_crop`);
- stills (reference, extra references, their masks) are scaled to [-1, 1] first and resized as float, unclamped
  (`still_to_model`); the driving video and the driving mask are resized as uint8 (torchvision rounds and clamps)
  and scaled after, as (x - 127.5) / 127.5 (`frames_to_model`);
- the driving video and mask enter the model at half size (`half_size`, bilinear 0.5x, no antialias);
- masks become seven exclusive colour maps (white, red, green, blue, yellow, magenta, cyan), area-downsampled to the
  latent grid and grouped four frames per latent frame, first frame repeated 4x (`masks_to_28ch`);
- decoded frames go back to uint8 by truncation (`to_uint8_frames`).

tests/test_official_preprocess.py holds these to tensors computed by the official code on odd sizes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from scailflow.scail.sizes import cover_size, target_size  # noqa: F401 - the size rules, kept importable from here

# a channel is "on" above this value on the [-1, 1] scale: pixel 226 is on, 225 is off
MASK_THRESHOLD = (225 - 127.5) / 127.5
RESIZE_CHUNK = 16  # frames resized at once (the result does not depend on it; the float copy's memory does)


def resize_crop(x: torch.Tensor, target_h: int, target_w: int) -> torch.Tensor:
    """[N, C, H, W] (uint8 or float) cover-resized with torchvision's bicubic (antialiased) resize and centre-cropped
    to [N, C, target_h, target_w]; uint8 stays uint8 (rounded and clamped by torchvision), float is not clamped."""
    h, w = x.shape[-2:]
    nh, nw = cover_size(h, w, target_h, target_w)
    x = TF.resize(x, [nh, nw], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.crop(x, (nh - target_h) // 2, (nw - target_w) // 2, target_h, target_w)


def still_to_model(image: np.ndarray, target_h: int, target_w: int, device=None) -> torch.Tensor:
    """RGB uint8 [H, W, 3] -> float32 [3, target_h, target_w]: scaled to [-1, 1] as torchvision's ToTensor * 2 - 1,
    then resized as float on `device` (the official code resizes stills on the GPU), not clamped."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
    x = (x.float().div(255) * 2 - 1)[None]
    return resize_crop(x.to(device) if device is not None else x, target_h, target_w)[0]


def resize_frames(frames, target_h: int, target_w: int, indices=None) -> torch.Tensor:
    """RGB uint8 frames [T, H, W, 3] (an array, or a streamed video: anything indexed by an index array) -> uint8
    [T, 3, target_h, target_w], cover-resized and cropped as the official code does. `indices` picks (and may repeat)
    frames. Taken RESIZE_CHUNK frames at a time, so at most a chunk is held at source size."""
    idx = np.arange(len(frames)) if indices is None else np.asarray(indices)
    chunks = []
    for i in range(0, len(idx), RESIZE_CHUNK):
        x = torch.from_numpy(np.asarray(frames[idx[i : i + RESIZE_CHUNK]])).permute(0, 3, 1, 2)  # the official layout
        chunks.append(resize_crop(x, target_h, target_w))
    return torch.cat(chunks)


def frames_to_model(frames, target_h: int, target_w: int, indices=None) -> torch.Tensor:
    """RGB uint8 [T, H, W, 3] -> float32 [3, T, target_h, target_w] in [-1, 1]: resized as uint8 (on the CPU, as the
    official code does; `resize_frames`), then scaled as (x - 127.5) / 127.5."""
    out = resize_frames(frames, target_h, target_w, indices)
    return ((out - 127.5) / 127.5).permute(1, 0, 2, 3).contiguous()


def to_unit_range(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [T, H, W, 3] (or [H, W, 3]) at the target size -> float32 [3, T, H, W] in [-1, 1], no resizing."""
    x = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    if x.ndim == 3:
        x = x[None]
    return (x.permute(3, 0, 1, 2).to(torch.float32) - 127.5) / 127.5


def half_size(video: torch.Tensor) -> torch.Tensor:
    """0.5x bilinear downscale of [C, T, H, W] (the driving video and its mask enter the model at half size)."""
    frames = video.permute(1, 0, 2, 3)
    frames = F.interpolate(frames, scale_factor=0.5, mode="bilinear", align_corners=False)
    return frames.permute(1, 0, 2, 3).contiguous()


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """Decoded [3, T, H, W] in [-1, 1] -> RGB uint8 [T, H, W, 3], truncated as the official writer does
    (`(((x.clamp(-1, 1) + 1) / 2) * 255).to(uint8)` in float32)."""
    x = (video.float().clamp(-1, 1) + 1) / 2
    return (x.permute(1, 2, 3, 0) * 255).to(torch.uint8).cpu().numpy()


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
