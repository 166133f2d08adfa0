"""Several people from one foreground mask, with no downloads: mediapipe's face detector (its full-range model ships
inside the wheel) seeds one person per face, a watershed on the foreground's distance transform (scikit-image)
splits touching people along their narrowest joins, and each person is tracked through the clip from their eroded
mask in the previous frame (re-anchored by their face whenever it is seen).

Limits: people who occlude each other or cross swap or merge where they touch; a person whose face is never seen
in the first frame joins the person they touch (separate foreground regions are still separate people); people who
enter after the first frame join the nearest tracked person or stay black. SAM 2 / SAM 3 track through all of that.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 pixels


@dataclass
class FaceDetector:
    """mediapipe's BlazeFace, full-range model (people at a distance, as in dance videos)."""

    min_confidence: float = 0.5

    @contextlib.contextmanager
    def session(self):
        from mediapipe.python.solutions.face_detection import FaceDetection

        with FaceDetection(model_selection=1, min_detection_confidence=self.min_confidence) as model:
            yield lambda frame: self._boxes(model, frame)

    @staticmethod
    def _boxes(model, frame: np.ndarray) -> list[Box]:
        h, w = frame.shape[:2]
        out = []
        for det in model.process(np.ascontiguousarray(frame)).detections or []:
            b = det.location_data.relative_bounding_box
            out.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h))
        return out


def _face_marker(box: Box, shape: tuple[int, int]) -> np.ndarray:
    """The face and a body column below it (face-wide, three faces down): where this person surely is."""
    h, w = shape
    x0, y0, x1, y1 = box
    fh = y1 - y0
    m = np.zeros(shape, bool)
    c0, c1 = int(max(0, x0)), int(min(w, np.ceil(x1)))
    r0, r1 = int(max(0, y0)), int(min(h, np.ceil(y1 + 3 * fh)))
    m[r0:r1, c0:c1] = True
    return m


def _flood(foreground: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """Grow the markers over the foreground along its distance transform; foreground left unreached (not connected
    to any marker) goes to the nearest person within 5% of the frame, else stays nobody."""
    if not markers.any():
        return np.zeros(foreground.shape, np.uint8)
    depth = ndimage.distance_transform_edt(foreground)
    labels = watershed(-depth, markers.astype(np.int32), mask=foreground)
    left = foreground & (labels == 0)
    if left.any():
        dist, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        near = left & (dist <= 0.05 * max(foreground.shape))
        labels[near] = labels[iy[near], ix[near]]
    return labels.astype(np.uint8)


def split_people(foreground: np.ndarray, faces: list[Box]) -> list[np.ndarray]:
    """First-frame candidates: each separate foreground region is a person, except that a region holding several
    faces is split into one person per face. Returns boolean masks (unordered)."""
    n, regions = cv2.connectedComponents(foreground.astype(np.uint8), connectivity=8)
    out: list[np.ndarray] = []
    for r in range(1, n):
        region = regions == r
        inside = [f for f in faces if _centre_in(f, region)]
        if len(inside) < 2:
            out.append(region)
            continue
        markers = np.zeros(region.shape, np.int32)
        for k, face in enumerate(inside, start=1):
            markers[_face_marker(face, region.shape) & region & (markers == 0)] = k
        labels = _flood(region, markers)
        out.extend(labels == k for k in range(1, len(inside) + 1))
    return out


def _centre_in(box: Box, mask: np.ndarray) -> bool:
    cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
    h, w = mask.shape
    if not (0 <= cx < w and 0 <= cy < h):
        return False
    r = max(2, int(0.25 * (box[3] - box[1])))  # the face centre may sit on a mask edge (hair, a turned head)
    return bool(mask[max(0, cy - r) : cy + r + 1, max(0, cx - r) : cx + r + 1].any())


def track_people(previous: list[np.ndarray], foreground: np.ndarray, faces: list[Box]) -> list[np.ndarray]:
    """Carry the people of the previous frame into this one: each is seeded by its eroded previous mask and by any
    face centred in it, and grown over this frame's foreground. Returns one mask per person, in the same order."""
    shape = foreground.shape
    r = max(1, int(0.01 * min(shape)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    markers = np.zeros(shape, np.int32)
    claimed = np.zeros(shape, np.int32)
    for k, prev in enumerate(previous, start=1):
        seed = cv2.erode(prev.astype(np.uint8), kernel) > 0
        for face in faces:
            if _centre_in(face, prev):
                seed |= _face_marker(face, shape)
        seed &= foreground
        claimed += seed
        markers[seed] = k
    markers[claimed > 1] = 0  # contested pixels are left to the flood
    labels = _flood(foreground, markers)
    return [labels == k for k in range(1, len(previous) + 1)]
