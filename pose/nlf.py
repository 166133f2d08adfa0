"""NLF 3D joints (TorchScript `detect_smpl_batched`), one tracked person at a time on box-isolated frames."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from scailflow.errors import InputError
from scailflow.pose.skeleton import N_JOINTS3D, smpl_to_slots
from scailflow.progress import report

log = logging.getLogger("scailflow.pose")

MAX_BATCH = 64
# v1 isolation: the frame is zeroed outside the person's box grown by 2.5% of W and 5% of H on each side.
BOX_GROW_X, BOX_GROW_Y = 0.025, 0.05


def isolate(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Copy of `frame` with everything outside the grown box set to 0."""
    h, w = frame.shape[:2]
    x1 = int(max(0, np.floor(box[0] - BOX_GROW_X * w)))
    y1 = int(max(0, np.floor(box[1] - BOX_GROW_Y * h)))
    x2 = int(min(w, np.ceil(box[2] + BOX_GROW_X * w)))
    y2 = int(min(h, np.ceil(box[3] + BOX_GROW_Y * h)))
    out = np.zeros_like(frame)
    out[y1:y2, x1:x2] = frame[y1:y2, x1:x2]
    return out


def _first_detection(item) -> np.ndarray | None:
    t = item if isinstance(item, torch.Tensor) else torch.as_tensor(item)
    if t.ndim == 3 and t.shape[0] > 0:
        return t[0].detach().float().cpu().numpy()
    if t.ndim == 2 and t.shape[0] == 24:
        return t.detach().float().cpu().numpy()
    return None


class NLF:
    """Loads the TorchScript model from a user-configured path only and returns SMPL->slot joints in mm."""

    def __init__(self, path: Path, device: torch.device):
        self.device = device
        try:
            self.model = torch.jit.load(str(path), map_location=device)
        except (RuntimeError, ValueError, OSError) as e:
            raise InputError(f"cannot load the NLF TorchScript model {path}: {str(e).splitlines()[0]}") from None
        if not hasattr(self.model, "detect_smpl_batched"):
            raise InputError(f"{path} is TorchScript but has no detect_smpl_batched method (not an NLF model)")
        self.model.eval()
        log.info("NLF loaded from %s on %s", path, device)

    def joints(self, frames_rgb: np.ndarray, batch: int = MAX_BATCH) -> np.ndarray:
        """RGB uint8 [T, H, W, 3] -> [T, 18, 3] camera-space mm of detection 0 (zeros where none)."""
        out = np.zeros((len(frames_rgb), N_JOINTS3D, 3), np.float32)
        batch = max(1, min(batch, MAX_BATCH))
        with torch.inference_mode():
            for start in range(0, len(frames_rgb), batch):
                chunk = torch.from_numpy(np.ascontiguousarray(frames_rgb[start : start + batch]))
                x = chunk.permute(0, 3, 1, 2).contiguous().to(self.device)
                result = self.model.detect_smpl_batched(x)
                per_image = result["joints3d_nonparam"]
                for i in range(len(chunk)):
                    j = _first_detection(per_image[i])
                    if j is not None and np.all(np.isfinite(j)):
                        out[start + i] = smpl_to_slots(j)
        return out

    def track_joints(self, frames_rgb: np.ndarray, boxes: list[np.ndarray | None]) -> np.ndarray:
        """3D joints of one tracked person: each frame isolated to its box; frames without a box stay zero."""
        idx = [i for i, b in enumerate(boxes) if b is not None]
        out = np.zeros((len(frames_rgb), N_JOINTS3D, 3), np.float32)
        report("3d-pose", 0, len(idx))
        for start in range(0, len(idx), MAX_BATCH):
            sel = idx[start : start + MAX_BATCH]
            isolated = np.stack([isolate(frames_rgb[i], boxes[i]) for i in sel])
            out[sel] = self.joints(isolated)
            report("3d-pose", start + len(sel), len(idx))
        return out
