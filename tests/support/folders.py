"""Sample inputs written with the real encoder: a user's folder (reference photo, driving video, prompt, job.yaml)
and a prepared folder under the official file names (what `scailflow generate` takes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scailflow.files import write_text_atomic
from scailflow.flows.demo import astronaut, sway_frames
from scailflow.media import write_image, write_video

JOB = "sampling:\n  steps: 2\n  target_h: 64\n  target_w: 64\n  seed: 3\n"


def make_folder(root: Path, name: str = "clip", frames: int = 13, size: int = 128) -> Path:
    """`root/name`: the astronaut photo as ref.png, `frames` frames of her swaying as driving.mp4 (16 fps),
    a prompt.txt and a job.yaml for the tiny-random model (2 steps, 64x64, seed 3)."""
    folder = root / name
    folder.mkdir()
    still = astronaut(size)
    write_image(folder / "ref.png", still)
    write_video(folder / "driving.mp4", sway_frames(still, frames), fps=16)
    write_text_atomic(folder / "prompt.txt", "A woman in an orange suit sways.\n")
    write_text_atomic(folder / "job.yaml", JOB)
    return folder


def write_prepared(d: Path) -> Path:
    """A prepared folder (official names): random reference and driving video, a blue person in both masks."""
    rng = np.random.default_rng(0)
    write_image(d / "ref.png", rng.integers(0, 255, (120, 64, 3), dtype=np.uint8))
    m = np.full((120, 64, 3), 255, np.uint8)
    m[20:100, 10:50] = (0, 0, 255)
    write_image(d / "ref_mask.png", m)
    write_video(d / "rendered_v2.mp4", rng.integers(0, 255, (11, 96, 64, 3), dtype=np.uint8), 24)
    dm = np.zeros((11, 96, 64, 3), np.uint8)
    dm[:, 20:80, 10:50] = (0, 0, 255)
    write_video(d / "rendered_mask_v2.mp4", dm, 24, lossless=True)
    return d


def official_args(d: Path, **over) -> list:
    """The official generate flags for a prepared folder `d` (output d/out.mp4); `over` replaces any of them."""
    args = {
        "--image": d / "ref.png",
        "--mask_image": d / "ref_mask.png",
        "--pose": d / "rendered_v2.mp4",
        "--mask_video": d / "rendered_mask_v2.mp4",
        "--save_file": d / "out.mp4",
    }
    args.update(over)
    return [x for kv in args.items() for x in kv]
