"""`scailflow demo`: a sample raw folder from a real photo shipped with scikit-image (astronaut) and a driving
video made by animating it, run through the whole flow on the embedded defaults and the tiny-random model."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from scailflow.files import make_dirs, write_text_atomic
from scailflow.media import write_image, write_video

DEMO_SIZE = 256
DEMO_FRAMES = 25
DEMO_PROMPT = (
    "A woman with short dark hair in an orange flight suit sways gently from side to side and nods, "
    "smiling at the camera, in a bright room with a flag behind her."
)
DEMO_JOB = """\
# scailflow demo: small and fast on a CPU with the tiny-random model (its output is noise)
mode: animation
driving: end-to-end
sampling:
  steps: 4
  target_h: 128
  target_w: 128
  seed: 42
"""


def astronaut(size: int = DEMO_SIZE) -> np.ndarray:
    from skimage import data

    return cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


def sway_frames(image: np.ndarray, frames: int = DEMO_FRAMES) -> np.ndarray:
    """The still, swaying and bobbing: rotation up to 8 degrees and a few pixels of shift per frame."""
    h, w = image.shape[:2]
    out = []
    for i in range(frames):
        phase = 2 * np.pi * i / frames
        m = cv2.getRotationMatrix2D((w / 2, h * 0.9), 8 * np.sin(phase), 1.0 + 0.03 * np.sin(2 * phase))
        m[0, 2] += 6 * np.sin(phase)
        m[1, 2] += 3 * np.cos(2 * phase)
        out.append(cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


def build_demo_folder(folder: str | Path) -> Path:
    """Write ref.png, driving.mp4, prompt.txt and job.yaml into `folder` (kept if already there)."""
    folder = Path(folder)
    make_dirs(folder)
    still = astronaut()
    if not (folder / "ref.png").is_file():
        write_image(folder / "ref.png", still)
    if not (folder / "driving.mp4").is_file():
        write_video(folder / "driving.mp4", sway_frames(still), fps=16)
    if not (folder / "prompt.txt").is_file():
        write_text_atomic(folder / "prompt.txt", DEMO_PROMPT + "\n")
    if not (folder / "job.yaml").is_file():
        write_text_atomic(folder / "job.yaml", DEMO_JOB)
    return folder
