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

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 pixels

# The long side, in pixels, that people are split and tracked at. The models see less (the selfie segmenter 256 px,
# the face detector 192 px), SCAIL-2 sees the mask at half its target size (448 px wide at 896x512), and the
# watershed and erosions of a 1080p frame cost ~0.6 s a frame (measured, docs/performance.md) against ~0.06 s here.
TRACK_SIDE = 640


class WorkScale:
    """Between a frame's size and the smaller one its people are split and tracked at (`side` on the long side;
    None or a frame that is already smaller: the frame's own size, nothing changes)."""

    def __init__(self, shape: tuple[int, int], side: int | None = TRACK_SIDE):
        self.shape = shape[:2]
        h, w = self.shape
        self.factor = 1.0 if not side or max(h, w) <= side else side / max(h, w)
        self.size = (max(1, round(w * self.factor)), max(1, round(h * self.factor)))  # (w, h) for cv2

    def probability(self, prob: np.ndarray) -> np.ndarray:
        """A full-size foreground probability -> the working-size foreground (area-averaged, then > 0.5)."""
        if self.factor == 1.0:
            return prob > 0.5
        return cv2.resize(prob, self.size, interpolation=cv2.INTER_AREA) > 0.5

    def boxes(self, boxes: list[Box]) -> list[Box]:
        return [tuple(v * self.factor for v in b) for b in boxes]

    def labels(self, small: np.ndarray, foreground: np.ndarray) -> np.ndarray:
        """Working-size labels -> full size (nearest), kept inside the full-size foreground."""
        if self.factor == 1.0:
            return small
        h, w = self.shape
        big = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        big[~foreground] = 0
        return big


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
    from scipy import ndimage  # here: ~1 s of imports that a run with one person never needs
    from skimage.segmentation import watershed

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
