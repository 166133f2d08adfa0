"""The prepared folder's contract: the official file names with the stage that writes each, the six-colour person
palette, and where the driving mask comes from in each mode. One definition of each, imported everywhere else.

A prepared folder (a flow's output folder, or one made by hand for `scailflow generate`) holds:

| file | written by | read by generation as |
|---|---|---|
| `rendered_v2.mp4` | pose | the driving input (the video itself end-to-end, the skeleton render in pose mode) |
| `rendered_mask_v2.mp4` | pose (pose-driven animation) or masks (animation) | the driving mask, animation |
| `replace_mask.mp4` | masks (replacement) | the driving mask, replacement |
| `ref_mask.png` | masks | the reference's mask |
| `ref_fitted.png` | masks (replacement with fit_reference) | the reference, scaled to the replaced person |
| `extra_ref_mask_<n>.png` | masks | the mask of extra reference image n |
| `prompt.txt`, `caption.txt` | prompt | the positive prompt (the caption is Gemini's, kept for reading) |
| `takes/*.mp4`, `output.mp4` | generate | the result (`output.mp4`: the latest take) |

Pose-driven animation is the one case where two stages want `rendered_mask_v2.mp4`: the skeleton's flat-colour
render is the driving mask there, so the masks stage segments into `segmentation/` and publishes only its reference
masks beside the other files.

Light on purpose (no numpy): the command line's --help imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

# ---- the person palette ------------------------------------------------------------------------------------------
# One colour per person, in assignment order: person 0 (leftmost in the first driving frame) is blue, then red, ...
# The eight corners of the RGB cube are the colours a mask may hold: these six, black and white.
BLACK = (0, 0, 0)
WHITE = (255, 255, 255)
PERSON_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 255),  # blue
    (255, 0, 0),  # red
    (0, 255, 0),  # green
    (255, 0, 255),  # magenta
    (0, 255, 255),  # cyan
    (255, 255, 0),  # yellow
)
PERSON_COLOUR_NAMES = ("blue", "red", "green", "magenta", "cyan", "yellow")

# ---- the file names ----------------------------------------------------------------------------------------------
RENDERED = "rendered_v2.mp4"
ANIMATION_MASK = "rendered_mask_v2.mp4"
REPLACEMENT_MASK = "replace_mask.mp4"
REF_MASK = "ref_mask.png"
FITTED_REF = "ref_fitted.png"
PROMPT = "prompt.txt"
CAPTION = "caption.txt"
OUTPUT = "output.mp4"
TAKES_DIR = "takes"
SEGMENTATION_DIR = "segmentation"
RUN_RECORD = "run.json"
MANIFEST_DIR = ".scailflow"  # under the output folder: the stages' manifests and what a run keeps for itself
SEGMENTS_DIR = "segments"  # under MANIFEST_DIR: the finished segments of the take being generated (resume)

DRIVING_MASK_NAMES = {"animation": ANIMATION_MASK, "replacement": REPLACEMENT_MASK}

# official name -> the stage that owns it (writes it in a flow's output folder)
OWNERS: dict[str, str] = {
    RENDERED: "pose",
    ANIMATION_MASK: "pose or masks",  # see driving_mask_source
    REPLACEMENT_MASK: "masks",
    REF_MASK: "masks",
    FITTED_REF: "masks",
    "extra_ref_mask_<n>.png": "masks",
    PROMPT: "prompt",
    CAPTION: "prompt",
    OUTPUT: "generate",
    TAKES_DIR + "/": "generate",
}


def extra_ref_mask_name(n: int) -> str:
    """The mask of extra reference image `n` (0-based, in the folder's order)."""
    return f"extra_ref_mask_{n}.png"


def driving_mask_name(mode: str) -> str:
    """The driving mask's official name for `mode` (animation | replacement)."""
    return DRIVING_MASK_NAMES[mode]


def driving_mask_source(mode: str, driving: str) -> Literal["pose", "masks"]:
    """Which stage's file generation reads as the driving mask: pose-driven animation uses the skeleton's
    flat-colour render (the pose stage's `rendered_mask_v2.mp4`); every other case the segmentation's."""
    return "pose" if driving == "pose" and mode == "animation" else "masks"


def segmentation_dir(out_dir: str | Path, mode: str, driving: str) -> Path:
    """Where the masks stage writes: `out_dir`, except in pose-driven animation (a `segmentation/` subfolder, since
    `rendered_mask_v2.mp4` beside the outputs is then the pose stage's)."""
    return Path(out_dir) / SEGMENTATION_DIR if driving_mask_source(mode, driving) == "pose" else Path(out_dir)


def segments_root(out_dir: str | Path) -> Path:
    """Where a long generation keeps its finished segments, one folder per take (scailflow.scail.resume)."""
    return Path(out_dir) / MANIFEST_DIR / SEGMENTS_DIR
