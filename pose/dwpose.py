"""DWPose through onnxruntime: YOLOX-L person boxes, then DW-LL UCOCO 384 whole-body SimCC keypoints.

Pre- and post-processing follow pose-render.md section 1: letterbox on 114, anchor-free decode over strides
8/16/32, class-0 NMS, a 1.25x box padded to aspect 0.75, a rotation-free crop affine, SimCC argmax / 2.
Input and output names and the model input sizes are read from the sessions at runtime.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from scailflow.native import import_native
from scailflow.pose.runtime import cpu_fallback_line, onnx_providers
from scailflow.pose.skeleton import PersonPose
from scailflow.progress import report

log = logging.getLogger("scailflow.pose")

DET_SIZE = 640
WINDOW = 64  # frames detected and posed at a time (the batches inside are smaller)
STRIDES = (8, 16, 32)
PAD_VALUE = 114
NMS_IOU = 0.45
PRE_SCORE = 0.1
PERSON_SCORE = 0.3
KP_SCORE = 0.3
BOX_PADDING = 1.25
CROP_W, CROP_H = 288, 384
SIMCC_SPLIT = 2.0
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)

# COCO-wholebody body index (with the neck inserted at 17) for each OpenPose-18 slot.
COCO_FOR_SLOT = (0, 17, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
FACE_RANGE = slice(24, 92)
LEFT_HAND_RANGE = slice(92, 113)
RIGHT_HAND_RANGE = slice(113, 134)


# ----------------------------------------------------------------------------- detector
def letterbox(image_bgr: np.ndarray, size: tuple[int, int] = (DET_SIZE, DET_SIZE)) -> tuple[np.ndarray, float]:
    """Resize keeping aspect (bilinear) and paste top-left on a 114 canvas; returns (CHW float32, ratio)."""
    th, tw = size
    h, w = image_bgr.shape[:2]
    r = min(th / h, tw / w)
    nw, nh = int(w * r), int(h * r)
    canvas = np.full((th, tw, 3), PAD_VALUE, np.uint8)
    canvas[:nh, :nw] = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32), r


def yolox_grids(size: tuple[int, int] = (DET_SIZE, DET_SIZE)) -> tuple[np.ndarray, np.ndarray]:
    """Anchor grid [N, 2] (x fastest within each stride) and per-anchor stride [N, 1]."""
    grids, strides = [], []
    for s in STRIDES:
        gh, gw = size[0] // s, size[1] // s
        xv, yv = np.meshgrid(np.arange(gw), np.arange(gh))
        grids.append(np.stack([xv, yv], -1).reshape(-1, 2))
        strides.append(np.full((gh * gw, 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


def yolox_decode(
    raw: np.ndarray, ratio: float, size: tuple[int, int] = (DET_SIZE, DET_SIZE)
) -> tuple[np.ndarray, np.ndarray]:
    """Raw [N, 85] YOLOX output -> (xyxy boxes in original pixels [N, 4], person scores obj*cls0 [N])."""
    grid, stride = yolox_grids(size)
    if raw.shape[0] != grid.shape[0]:
        raise ValueError(f"detector output has {raw.shape[0]} anchors, expected {grid.shape[0]} for {size}")
    xy = (raw[:, :2] + grid) * stride
    wh = np.exp(raw[:, 2:4]) * stride
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1) / ratio
    scores = raw[:, 4] * raw[:, 5]
    return boxes.astype(np.float32), scores.astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_IOU) -> np.ndarray:
    """Greedy NMS, score descending, areas with the +1 pixel convention. Returns kept indices."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def select_persons(boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class-0 NMS after the 0.1 pre-threshold, then keep score > 0.3; score-descending order."""
    pre = scores > PRE_SCORE
    boxes, scores = boxes[pre], scores[pre]
    if not len(scores):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    keep = nms(boxes, scores)
    boxes, scores = boxes[keep], scores[keep]
    ok = scores > PERSON_SCORE
    return boxes[ok], scores[ok]


# ----------------------------------------------------------------------------- pose model
def box_to_centre_scale(box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """xyxy -> (centre, size) with the 1.25 padding and the short side grown to aspect w/h = 0.75."""
    x1, y1, x2, y2 = [float(v) for v in box[:4]]
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2], np.float32)
    w, h = (x2 - x1) * BOX_PADDING, (y2 - y1) * BOX_PADDING
    aspect = CROP_W / CROP_H
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return centre, np.array([w, h], np.float32)


def crop_affine(centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """2x3 affine taking the padded box to the 288x384 crop (centre -> (144, 192), width -> 288)."""
    k = CROP_W / float(scale[0])
    return np.array([[k, 0.0, CROP_W / 2 - k * centre[0]], [0.0, k, CROP_H / 2 - k * centre[1]]], np.float32)


def make_crop(image_bgr: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Warp the box to 288x384 (bilinear, border 0) and normalise with the DWPose mean/std (array order)."""
    crop = cv2.warpAffine(
        image_bgr,
        crop_affine(centre, scale),
        (CROP_W, CROP_H),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    crop = (crop.astype(np.float32) - MEAN) / STD
    return np.ascontiguousarray(crop.transpose(2, 0, 1))


def decode_simcc(
    simcc_x: np.ndarray, simcc_y: np.ndarray, centre: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """[K, 576], [K, 768] -> (keypoints [K, 2] in image pixels, scores [K]).

    Location = argmax / 2 in crop pixels (-1 when the score is <= 0), score = min of the two maxima,
    then mapped back through the crop: kp / (288, 384) * scale + centre - scale / 2.
    """
    x_loc = np.argmax(simcc_x, axis=1).astype(np.float32)
    y_loc = np.argmax(simcc_y, axis=1).astype(np.float32)
    scores = np.minimum(simcc_x.max(axis=1), simcc_y.max(axis=1)).astype(np.float32)
    locs = np.stack([x_loc, y_loc], axis=1)
    locs[scores <= 0] = -1
    locs = locs / SIMCC_SPLIT
    kps = locs / np.array([CROP_W, CROP_H], np.float32) * scale + centre - scale / 2
    return kps.astype(np.float32), scores


def to_person(
    kps133: np.ndarray, scores133: np.ndarray, width: int, height: int, box: np.ndarray | None = None
) -> PersonPose:
    """133 COCO-wholebody points (pixels) -> PersonPose on the 134-point layout, normalised by W, H."""
    neck = (kps133[5] + kps133[6]) / 2
    neck_score = 1.0 if (scores133[5] > KP_SCORE and scores133[6] > KP_SCORE) else 0.0
    kps = np.insert(kps133, 17, neck, axis=0)
    scores = np.insert(scores133, 17, neck_score)
    norm = kps / np.array([width, height], np.float32)
    slots = list(COCO_FOR_SLOT)
    body = norm[slots].copy()
    body_score = scores[slots].astype(np.float32)
    body[body_score <= KP_SCORE] = -1

    def part(sl: slice) -> np.ndarray:
        pts = norm[sl].copy()
        pts[scores[sl] < KP_SCORE] = -1
        return pts

    hands = np.stack([part(LEFT_HAND_RANGE), part(RIGHT_HAND_RANGE)])
    return PersonPose(
        body=body.astype(np.float32),
        body_score=body_score,
        face=part(FACE_RANGE),
        hands=hands.astype(np.float32),
        box=None if box is None else np.asarray(box, np.float32),
    )


def _batch_dim(session) -> int | None:
    """Fixed batch size of the first input, or None when the batch dimension is dynamic."""
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else None


def _hw(session, default: tuple[int, int]) -> tuple[int, int]:
    shape = session.get_inputs()[0].shape
    h, w = shape[2], shape[3]
    return (h, w) if isinstance(h, int) and isinstance(w, int) else default


class DWPose:
    """Whole-body 2D pose of every person in each frame (YOLOX-L + DW-LL SimCC) through onnxruntime."""

    def __init__(self, det_path: Path, pose_path: Path, device: str = "auto", batch: int = 8):
        ort = import_native("onnxruntime")

        providers = onnx_providers(device)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.det = ort.InferenceSession(str(det_path), sess_options=opts, providers=providers)
        self.pose = ort.InferenceSession(str(pose_path), sess_options=opts, providers=providers)
        self.providers = self.det.get_providers()
        fallback = cpu_fallback_line(device, self.providers)
        if fallback:
            log.warning(fallback)
        self.det_size = _hw(self.det, (DET_SIZE, DET_SIZE))
        self.det_batch = _batch_dim(self.det) or batch
        self.pose_batch = _batch_dim(self.pose) or batch * 4
        self.det_in = self.det.get_inputs()[0].name
        self.pose_in = self.pose.get_inputs()[0].name
        outs = [o.name for o in self.pose.get_outputs()]
        self.simcc_names = (
            next((n for n in outs if "x" in n.lower()), outs[0]),
            next((n for n in outs if "y" in n.lower()), outs[-1]),
        )
        log.info("DWPose on %s (detector batch %d, pose batch %d)", self.providers[0], self.det_batch, self.pose_batch)

    def detect(self, frames_bgr: list[np.ndarray]) -> list[np.ndarray]:
        """Person boxes (xyxy pixels, score-descending) per frame; the whole frame when none is found."""
        results: list[np.ndarray] = []
        report("detect", 0, len(frames_bgr))
        for start in range(0, len(frames_bgr), self.det_batch):
            chunk = frames_bgr[start : start + self.det_batch]
            packed = [letterbox(f, self.det_size) for f in chunk]
            batch = np.stack([p[0] for p in packed])
            raw = self.det.run(None, {self.det_in: batch})[0]
            for (_, r), out, frame in zip(packed, raw, chunk):
                boxes, _ = select_persons(*yolox_decode(out, r, self.det_size))
                if not len(boxes):
                    h, w = frame.shape[:2]
                    boxes = np.array([[0, 0, w, h]], np.float32)
                results.append(boxes)
            report("detect", len(results), len(frames_bgr))
        return results

    def keypoints(self, frames_bgr: list[np.ndarray], boxes: list[np.ndarray]) -> list[list[PersonPose]]:
        """Run the SimCC model on every box of every frame (batched crops)."""
        jobs = []
        for fi, (frame, fboxes) in enumerate(zip(frames_bgr, boxes)):
            for box in fboxes:
                centre, scale = box_to_centre_scale(box)
                jobs.append((fi, box, centre, scale, make_crop(frame, centre, scale)))
        people: list[list[PersonPose]] = [[] for _ in frames_bgr]
        report("keypoints", 0, len(jobs))
        for start in range(0, len(jobs), self.pose_batch):
            chunk = jobs[start : start + self.pose_batch]
            sx, sy = self.pose.run(list(self.simcc_names), {self.pose_in: np.stack([j[4] for j in chunk])})
            for (fi, box, centre, scale, _), x, y in zip(chunk, sx, sy):
                kps, scores = decode_simcc(x, y, centre, scale)
                h, w = frames_bgr[fi].shape[:2]
                people[fi].append(to_person(kps, scores, w, h, box))
            report("keypoints", min(start + self.pose_batch, len(jobs)), len(jobs))
        return people

    def __call__(self, frames_rgb: np.ndarray) -> list[list[PersonPose]]:
        """RGB uint8 [T, H, W, 3] (or a clip decoded as it is walked, scailflow.decode.StreamedFrames) -> per frame,
        the persons in detector-score order. WINDOW frames at a time: a long clip is never held whole."""
        people: list[list[PersonPose]] = []
        for start in range(0, len(frames_rgb), WINDOW):
            bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames_rgb[start : start + WINDOW]]
            people += self.keypoints(bgr, self.detect(bgr))
        return people
