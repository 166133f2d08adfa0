"""Track bookkeeping: which first-frame candidates become people, their order, and matching between images.

A segmentation is held as a uint8 label map ([T, H, W] or [H, W]): 0 = nobody, k + 1 = person k, with persons
numbered left to right by the x-centre of their first-frame bounding box (the colour order).
"""

from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np

MIN_AREA_FRACTION = 0.01  # tracks covering less of the first frame are dropped (official SCAIL preprocessing)

Selector = Callable[[Sequence[np.ndarray]], list[int]]


def area_fraction(mask: np.ndarray) -> float:
    """Share of the frame a boolean mask covers."""
    return float(np.count_nonzero(mask)) / float(mask.size) if mask.size else 0.0


def select_tracks(
    first_masks: Sequence[np.ndarray], max_persons: int, min_area: float = MIN_AREA_FRACTION
) -> list[int]:
    """Indices of the candidates kept: area >= `min_area` of the frame, largest first, at most `max_persons`."""
    areas = [area_fraction(m) for m in first_masks]
    big = [i for i, a in enumerate(areas) if a >= min_area]
    big.sort(key=lambda i: -areas[i])  # stable: equal areas keep prompt order
    return big[: max(0, max_persons)]


def bbox_centre_x(mask: np.ndarray) -> float:
    """x-centre of the mask's bounding box in pixels (inf for an empty mask, so it sorts last)."""
    cols = np.flatnonzero(np.asarray(mask).any(axis=0))
    if cols.size == 0:
        return float("inf")
    return (cols[0] + cols[-1]) / 2.0


def left_to_right(masks: Sequence[np.ndarray], indices: Sequence[int] | None = None) -> list[int]:
    """`indices` (default: all) sorted by first-frame bounding-box x-centre, left first."""
    indices = list(range(len(masks))) if indices is None else list(indices)
    return sorted(indices, key=lambda i: (bbox_centre_x(masks[i]), i))


def person_selector(max_persons: int, min_area: float = MIN_AREA_FRACTION) -> Selector:
    """Selector for segmenters: keep the largest big-enough candidates, returned in left-to-right order."""

    def select(first_masks: Sequence[np.ndarray]) -> list[int]:
        return left_to_right(first_masks, select_tracks(first_masks, max_persons, min_area))

    return select


def centroid(mask: np.ndarray) -> tuple[float, float]:
    """Mask centroid normalised by the image size: (x / W, y / H)."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape[:2]
    if xs.size == 0:
        return (float("nan"), float("nan"))
    return (float(xs.mean() + 0.5) / w, float(ys.mean() + 0.5) / h)


def match_by_centroid(ref_masks: Sequence[np.ndarray], drv_masks: Sequence[np.ndarray]) -> dict[int, int]:
    """Greedy nearest-centroid matching {reference person -> driving track}.

    Centroids are normalised by each image's own size, so a reference and a video of different sizes compare.
    The closest remaining pair is matched first, until every reference person (or every track) is used.
    """
    rc = [centroid(m) for m in ref_masks]
    dc = [centroid(m) for m in drv_masks]
    pairs = sorted(
        ((np.hypot(r[0] - d[0], r[1] - d[1]), i, j) for i, r in enumerate(rc) for j, d in enumerate(dc)),
        key=lambda p: (p[0], p[1], p[2]),
    )
    out: dict[int, int] = {}
    used: set[int] = set()
    for _, i, j in pairs:
        if i not in out and j not in used:
            out[i] = j
            used.add(j)
    return out


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a boolean mask to (height, width): bilinear on 0/1, then > 0.5."""
    h, w = size
    m = np.asarray(mask, dtype=np.float32)
    if m.shape == (h, w):
        return m > 0.5
    return cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks of the same size (0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / union if union else 0.0


def best_iou(ref_mask: np.ndarray, candidates: Sequence[np.ndarray]) -> int:
    """Index of the candidate whose mask overlaps the reference mask (resized to its size) best."""
    if not candidates:
        raise ValueError("no candidates")
    ref = resize_mask(ref_mask, candidates[0].shape[:2])
    scores = [iou(ref, c) for c in candidates]
    return int(np.argmax(scores))


def compose_labels(scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Per-person probabilities [K, H, W] -> uint8 label map [H, W]; overlaps go to the most confident person."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape[0] == 0:
        return np.zeros(scores.shape[1:], np.uint8)
    best = scores.argmax(axis=0)
    on = scores.max(axis=0) > threshold
    return np.where(on, best + 1, 0).astype(np.uint8)


def masks_of(labels: np.ndarray, count: int) -> list[np.ndarray]:
    """Boolean masks of persons 0..count-1 from a label map."""
    return [labels == k + 1 for k in range(count)]


def relabel(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Map person k to person mapping[k] (0-based); persons not in `mapping` become nobody."""
    lut = np.zeros(256, np.uint8)
    for old, new in mapping.items():
        lut[old + 1] = new + 1
    return lut[labels]


def dilate(labels: np.ndarray, px: int) -> np.ndarray:
    """Grow every person's region by `px` pixels (elliptical structuring element) in each frame.

    Where grown regions meet, the lower person number wins; existing person pixels are never overwritten.
    """
    if px <= 0:
        return labels
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    frames = labels[None] if labels.ndim == 2 else labels
    out = frames.copy()
    ids = [int(v) for v in np.unique(frames) if v]
    for t in range(frames.shape[0]):
        grown = frames[t].copy()
        for v in ids:
            region = cv2.dilate((frames[t] == v).astype(np.uint8), kernel) > 0
            grown[region & (grown == 0)] = v
        out[t] = grown
    return out[0] if labels.ndim == 2 else out
