"""The reference's framing, and a PNG's own alpha as its mask.

In replacement mode SCAIL-2 copies the character's size from the reference: a full-bleed reference of a person who
is small in the driving video comes out oversize. `framing` compares the two in the frame the model sees (both
cover-resized to one target size; the driving video's aspect is taken as the target's), `fit_reference` scales the
reference and its labels about the character so the sizes match (pixels padded with white, labels with nobody).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# past this ratio (or under its inverse) the character's size in the output visibly follows the reference
WARN_RATIO = 1.25
MIN_ALPHA_AREA = 0.01


def box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) inclusive of a boolean mask, None when empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def framing(ref_mask: np.ndarray, driving_mask: np.ndarray) -> dict | None:
    """How much taller the reference character stands in the model's frame than the person they replace.

    Both are measured as a share of the target height after cover-resizing to the driving frame's size."""
    rb, db = box(ref_mask), box(driving_mask)
    if rb is None or db is None:
        return None
    (hr, wr), (hd, wd) = ref_mask.shape, driving_mask.shape
    cover = max(hd / hr, wd / wr)  # the reference's scale when cover-resized to the driving frame
    ref_share = (rb[3] - rb[1] + 1) * cover / hd
    drv_share = (db[3] - db[1] + 1) / hd
    return {
        "reference_height_share": round(ref_share, 3),
        "driving_height_share": round(drv_share, 3),
        "ratio": round(ref_share / drv_share, 3),
    }


def fit_reference(image: np.ndarray, labels: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale the reference (RGB) and its label map by `scale` about the character's box centre, on a canvas of the
    same size: white where the scaled image does not reach, nobody (0) in the labels."""
    h, w = labels.shape
    b = box(labels > 0)
    cx, cy = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) if b else (w / 2, h / 2)
    m = np.array([[scale, 0, cx - scale * cx], [0, scale, cy - scale * cy]], np.float32)
    # keep the character inside the canvas: move the scaled box back in where it would leave it
    if b:
        x0, y0 = b[0] * scale + m[0, 2], b[1] * scale + m[1, 2]
        x1, y1 = b[2] * scale + m[0, 2], b[3] * scale + m[1, 2]
        m[0, 2] += max(0.0, -x0) - max(0.0, x1 - (w - 1)) if (x1 - x0) < w else 0.0
        m[1, 2] += max(0.0, -y0) - max(0.0, y1 - (h - 1)) if (y1 - y0) < h else 0.0
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    out = cv2.warpAffine(image, m, (w, h), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))
    lab = cv2.warpAffine(labels, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out, lab


def alpha_mask(path: str | os.PathLike) -> np.ndarray | None:
    """The opaque part (alpha > 127) of an image with transparency, or None (no alpha, fully opaque, or too little
    left opaque to be a character)."""
    with Image.open(Path(path)) as im:
        if im.mode not in ("RGBA", "LA", "PA") and not (im.mode == "P" and "transparency" in im.info):
            return None
        alpha = np.asarray(im.convert("RGBA"))[..., 3]
    if alpha.min() == 255:
        return None
    opaque = alpha > 127
    return opaque if opaque.mean() >= MIN_ALPHA_AREA else None
