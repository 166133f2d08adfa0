"""Fit the driving skeleton to the reference's body size and position (pose-render.md, v1 `--use_align`).

The render camera becomes K' = [[f m, 0, W/2 + p], [0, f m s, H/2 + q]]: m scales the driving body, s
stretches it vertically, p/q shift it. They are fitted so driving frame 0 lands on the reference's own 2D
keypoints (slots 0-13): with the four lower-leg points of the reference visible, neck + legs (loss e_neck +
4 * mean(rest)); otherwise neck + upper body {0, 2, 3, 5, 6} (loss 8 * e_neck + mean(rest)). Bounds: m in
[0.7, 1.4], s in [0.8, 1.15], |p| <= W, |q| <= H. The reference image is taken as resized to the driving size.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from scailflow.errors import InputError
from scailflow.pose.render3d import Camera
from scailflow.pose.skeleton import PersonPose, focal_length

log = logging.getLogger("scailflow.pose")

M_RANGE = (0.7, 1.4)
S_RANGE = (0.8, 1.15)
LOWER_CHECK = (9, 10, 12, 13)
LOWER_SET = (8, 9, 10, 11, 12, 13)
UPPER_SET = (0, 2, 3, 5, 6)
FACE_SCALE_RANGE = (0.8, 1.5)
HEAD_SLOT, LEFT_WRIST_SLOT, RIGHT_WRIST_SLOT = 0, 7, 4


@dataclass(frozen=True)
class Alignment:
    """Fitted scale m, vertical stretch s and shift (p, q) in pixels."""

    m: float = 1.0
    s: float = 1.0
    p: float = 0.0
    q: float = 0.0

    def camera(self, height: int, width: int) -> Camera:
        """The aligned render camera K'."""
        f = focal_length(height, width)
        return Camera(f * self.m, f * self.m * self.s, width / 2 + self.p, height / 2 + self.q)

    def to_dict(self) -> dict:
        return asdict(self)


def _grid(lo: float, hi: float, step: float) -> np.ndarray:
    return np.linspace(lo, hi, int(round((hi - lo) / step)) + 1)


def fit(
    ref_px: np.ndarray, ref_ok: np.ndarray, drv_xy: np.ndarray, drv_ok: np.ndarray, height: int, width: int
) -> Alignment:
    """Fit (m, s, p, q) so f*m*X + W/2 + p, f*m*s*Y + H/2 + q match `ref_px` [18, 2] (pixels).

    `drv_xy` [18, 2] holds the driving joints as normalised image-plane coordinates (X/Z, Y/Z).
    """
    f = focal_length(height, width)
    if not (ref_ok[1] and drv_ok[1]):
        raise InputError("alignment needs the neck in the reference image and in the first driving frame")
    lower = all(ref_ok[i] for i in LOWER_CHECK)
    rest = [i for i in (LOWER_SET if lower else UPPER_SET) if ref_ok[i] and drv_ok[i]]
    if not rest:
        raise InputError("alignment found no body keypoint shared by the reference and the first driving frame")
    idx = np.array([1] + rest)
    w = np.array([1.0 if lower else 8.0] + [(4.0 if lower else 1.0) / len(rest)] * len(rest))
    ref, drv = ref_px[idx].astype(np.float64), drv_xy[idx].astype(np.float64)

    def solve(ms: np.ndarray, ss: np.ndarray):
        m = ms[:, None, None]
        sy = (ms[:, None] * ss[None, :])[..., None]
        ru = ref[None, None, :, 0] - (f * m * drv[None, None, :, 0] + width / 2)
        rv = ref[None, None, :, 1] - (f * sy * drv[None, None, :, 1] + height / 2)
        ru = np.broadcast_to(ru, rv.shape)
        p = np.clip((ru * w).sum(-1) / w.sum(), -width, width)
        q = np.clip((rv * w).sum(-1) / w.sum(), -height, height)
        loss = (w * ((ru - p[..., None]) ** 2 + (rv - q[..., None]) ** 2)).sum(-1)
        i, j = np.unravel_index(np.argmin(loss), loss.shape)
        return ms[i], ss[j], p[i, j], q[i, j]

    m, s, _, _ = solve(_grid(*M_RANGE, 0.01), _grid(*S_RANGE, 0.01))
    fine_m = np.clip(_grid(m - 0.01, m + 0.01, 0.0005), *M_RANGE)
    fine_s = np.clip(_grid(s - 0.01, s + 0.01, 0.0005), *S_RANGE)
    m, s, p, q = solve(fine_m, fine_s)
    result = Alignment(float(m), float(s), float(p), float(q))
    log.info("alignment: m=%.3f s=%.3f p=%.1f q=%.1f (%s)", m, s, p, q, "legs" if lower else "upper body")
    return result


def driving_plane_points(person: PersonPose, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image-plane coordinates of a driving person: from its 3D joints, else from its 2D points."""
    if person.joints3d is not None:
        j = person.joints3d.astype(np.float64)
        ok = (j.sum(-1) != 0) & (j[:, 2] > 0)
        xy = np.zeros((len(j), 2))
        xy[ok] = j[ok, :2] / j[ok, 2:3]
        return xy, ok
    f = focal_length(height, width)
    px = person.body * np.array([width, height])
    ok = person.visible()
    return (px - np.array([width / 2, height / 2])) / f, ok


def fit_to_reference(reference: PersonPose, driving: PersonPose, height: int, width: int) -> Alignment:
    """Alignment of a driving person (frame 0) to the reference person's own keypoints."""
    ref_px = reference.body * np.array([width, height], np.float32)
    drv_xy, drv_ok = driving_plane_points(driving, height, width)
    ref_ok = reference.visible()
    ref_ok[14:] = False
    return fit(ref_px, ref_ok, drv_xy, drv_ok, height, width)


def _scale_about(points: np.ndarray, old_anchor: np.ndarray, new_anchor: np.ndarray, scale: np.ndarray) -> np.ndarray:
    out = points.copy()
    ok = (points[:, 0] >= 0) & (points[:, 1] >= 0)
    out[ok] = new_anchor + (points[ok] - old_anchor) * scale
    return out


def apply_to_overlay(person: PersonPose, al: Alignment, height: int, width: int) -> PersonPose:
    """Move a person's 2D points (face, head dots, hands) to follow the aligned render.

    With 3D joints: the face and head points follow the head joint (scale m, m*s clipped to 0.8-1.5), each hand
    follows its wrist (scale m, m*s). Without 3D (flat fallback) every 2D point takes the same affine map.
    """
    size = np.array([width, height], np.float64)
    base = Camera.default(height, width)
    aligned = al.camera(height, width)
    if person.joints3d is None:

        def move(pts: np.ndarray) -> np.ndarray:
            out = pts.astype(np.float64).copy()
            ok = (pts[:, 0] >= 0) & (pts[:, 1] >= 0)
            px = pts[ok] * size
            px[:, 0] = al.m * (px[:, 0] - width / 2) + width / 2 + al.p
            px[:, 1] = al.m * al.s * (px[:, 1] - height / 2) + height / 2 + al.q
            out[ok] = px / size
            return out.astype(np.float32)

        return PersonPose(
            body=move(person.body),
            body_score=person.body_score,
            face=move(person.face),
            hands=np.stack([move(h) for h in person.hands]),
            joints3d=None,
            box=person.box,
        )

    j = person.joints3d

    def anchors(slot: int):
        if j[slot].sum() == 0 or j[slot, 2] <= 0:
            return None
        return base.project(j[slot]), aligned.project(j[slot])

    def moved(pts: np.ndarray, slot: int, scale: np.ndarray) -> np.ndarray:
        a = anchors(slot)
        if a is None:
            return pts
        return (_scale_about(pts * size, a[0], a[1], scale) / size).astype(np.float32)

    face_scale = np.clip(np.array([al.m, al.m * al.s]), *FACE_SCALE_RANGE)
    hand_scale = np.array([al.m, al.m * al.s])
    body = person.body.copy()
    head_pts = [0, 14, 15, 16, 17]
    body[head_pts] = moved(person.body[head_pts], HEAD_SLOT, face_scale)
    hands = np.stack(
        [moved(person.hands[0], LEFT_WRIST_SLOT, hand_scale), moved(person.hands[1], RIGHT_WRIST_SLOT, hand_scale)]
    )
    return PersonPose(
        body=body,
        body_score=person.body_score,
        face=moved(person.face, HEAD_SLOT, face_scale),
        hands=hands,
        joints3d=person.joints3d,
        box=person.box,
    )
