"""Keep each person's identity across frames; order people left to right by their first-frame box centre.

Same rule as the masks stage: on the first frame with people, boxes under 1% of the frame are dropped, the
largest `max_persons` are kept, and they are ordered by box-centre x. Later frames match detections to tracks
greedily by IoU with the track's last box (falling back to the nearest centre); people who appear later are
not tracked.
"""

from __future__ import annotations

import logging

import numpy as np

from scailflow.pose.skeleton import PersonPose, empty_person

log = logging.getLogger("scailflow.pose")

MIN_AREA_RATIO = 0.01
MIN_IOU = 0.1
MAX_CENTRE_JUMP = 0.25  # of the frame diagonal
MIN_VISIBLE = 2


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xyxy boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float64)


def _area(box: np.ndarray) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def track(frames: list[list[PersonPose]], width: int, height: int, max_persons: int = 2) -> list[list[PersonPose]]:
    """Per-frame detections -> tracks[p][t] (left-to-right order; empty_person() where a track is lost)."""
    usable = [[p for p in people if p.box is not None and p.visible().sum() >= MIN_VISIBLE] for people in frames]
    start = next((i for i, people in enumerate(usable) if people), None)
    if start is None or max_persons < 1:
        return []
    first = [p for p in usable[start] if _area(p.box) >= MIN_AREA_RATIO * width * height] or usable[start]
    first = sorted(first, key=lambda p: -_area(p.box))[:max_persons]
    first = sorted(first, key=lambda p: _centre(p.box)[0])
    if start:
        log.info("first person seen on frame %d", start)
    tracks = [[empty_person() for _ in frames] for _ in first]
    last_box = [p.box.copy() for p in first]
    for k, p in enumerate(first):
        tracks[k][start] = p
    diag = float(np.hypot(width, height))
    for t in range(start + 1, len(frames)):
        people = usable[t]
        pairs = []
        for k, box in enumerate(last_box):
            for j, p in enumerate(people):
                o = iou(box, p.box)
                dist = float(np.linalg.norm(_centre(box) - _centre(p.box))) / diag
                if o >= MIN_IOU or dist <= MAX_CENTRE_JUMP:
                    pairs.append((-o, dist, k, j))
        pairs.sort()
        used_k, used_j = set(), set()
        for _, _, k, j in pairs:
            if k in used_k or j in used_j:
                continue
            used_k.add(k)
            used_j.add(j)
            tracks[k][t] = people[j]
            last_box[k] = people[j].box.copy()
    return tracks
