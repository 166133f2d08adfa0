"""Colour that holds across the segments of a long video: each later segment is matched to the first segment's colour
statistics (scikit-image: Reinhard's mean/std transfer in CIE Lab, or per-channel histogram matching).

One transform per segment, computed from the whole segment and applied to each of its frames, so motion and lighting
inside a segment are kept and nothing flickers from frame to frame. Drift is the distance (Delta E, CIE76) between
a segment's mean Lab colour and the first segment's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.color import lab2rgb, rgb2lab
from skimage.exposure import match_histograms

METHODS = ("reinhard", "histogram")


def mean_lab(frames: np.ndarray) -> np.ndarray:
    """Mean CIE Lab colour of RGB frames [..., 3] in [0, 1]."""
    return rgb2lab(frames).reshape(-1, 3).mean(0)


def lab_drift(frames: np.ndarray, reference_mean: np.ndarray) -> float:
    """Delta E between the frames' mean Lab colour and a reference mean."""
    return float(np.linalg.norm(mean_lab(frames) - reference_mean))


def reinhard(frames: np.ndarray, ref_mean: np.ndarray, ref_std: np.ndarray) -> np.ndarray:
    """Reinhard et al. 2001 in Lab: the frames' per-channel mean and std become the reference's."""
    lab = rgb2lab(frames)
    flat = lab.reshape(-1, 3)
    mean, std = flat.mean(0), flat.std(0)
    lab = (lab - mean) / np.maximum(std, 1e-6) * ref_std + ref_mean
    return np.clip(lab2rgb(lab), 0.0, 1.0)


@dataclass
class ColorMatcher:
    """Holds the first segment's statistics; `match` brings a later segment to them."""

    method: str
    reference: np.ndarray | None = None  # first segment's frames (histogram matching needs them all)
    ref_mean: np.ndarray | None = None
    ref_std: np.ndarray | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown colour matching {self.method!r}; choose one of {', '.join(METHODS)}")

    def set_reference(self, frames: np.ndarray) -> None:
        """frames: RGB float [T, H, W, 3] in [0, 1] of the first segment."""
        lab = rgb2lab(frames).reshape(-1, 3)
        self.ref_mean, self.ref_std = lab.mean(0), lab.std(0)
        if self.method == "histogram":
            self.reference = frames

    def state(self) -> dict[str, np.ndarray]:
        """The reference statistics, to be kept with a finished segment (scail/resume.py)."""
        names = ("ref_mean", "ref_std", "reference")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def match(self, frames: np.ndarray) -> tuple[np.ndarray, dict]:
        """A later segment's frames matched to the reference; returns them and {lab_drift_before, lab_drift_after}."""
        before = lab_drift(frames, self.ref_mean)
        if self.method == "reinhard":
            out = reinhard(frames, self.ref_mean, self.ref_std)
        else:
            out = np.clip(match_histograms(frames, self.reference, channel_axis=-1), 0.0, 1.0)
        return out, {"lab_drift_before": round(before, 3), "lab_drift_after": round(lab_drift(out, self.ref_mean), 3)}
