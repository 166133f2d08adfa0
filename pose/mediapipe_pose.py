"""Embedded default backend: mediapipe 0.10.21 Holistic (its pose, hand and face models ship in the wheel).

Single person. The 33 pose landmarks are mapped onto the OpenPose-18 slots, the two 21-point hands onto the
hand layout DWPose uses (same joint order), the face mesh onto the drawn part of the 68-point face, and the
metric world landmarks are lifted into the render camera by
solving for the translation that best reprojects them onto the 2D landmarks.
"""

from __future__ import annotations

import logging

import numpy as np

from scailflow.native import import_native
from scailflow.pose.skeleton import N_BODY, N_FACE, N_JOINTS3D, PersonPose, focal_length
from scailflow.progress import iterate

log = logging.getLogger("scailflow.pose")

# mediapipe pose landmark index per OpenPose-18 slot (slot 1, the neck, is the shoulder midpoint).
MP_FOR_SLOT = (0, -1, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
# Face-mesh vertex for each 68-point landmark that the overlay draws (eyebrows 17-26, eyes 36-47, mouth
# 48-67), read off mediapipe's own contour lists (FACEMESH_*EYEBROW, *EYE, LIPS) at even steps along each
# contour. Jaw (0-16) and nose (27-35) are never drawn and stay missing.
FACE68_FROM_MESH = {
    17: 70,
    18: 63,
    19: 105,
    20: 66,
    21: 107,  # subject's right eyebrow, outer -> inner
    22: 336,
    23: 296,
    24: 334,
    25: 293,
    26: 300,  # left eyebrow, inner -> outer
    36: 33,
    37: 160,
    38: 158,
    39: 133,
    40: 153,
    41: 144,  # right eye: outer corner, upper lid, inner, lower lid
    42: 362,
    43: 385,
    44: 387,
    45: 263,
    46: 373,
    47: 380,
    48: 61,
    49: 40,
    50: 37,
    51: 0,
    52: 267,
    53: 270,
    54: 291,  # outer lips, upper
    55: 321,
    56: 314,
    57: 17,
    58: 84,
    59: 91,  # outer lips, lower
    60: 78,
    61: 81,
    62: 13,
    63: 311,
    64: 308,
    65: 317,
    66: 14,
    67: 87,  # inner lips
}
# A 3D joint is kept when mediapipe's visibility for it reaches this (guessed legs are dropped).
MIN_VISIBILITY_3D = 0.5
BODY_SCORE_FLOOR = 0.3
SOLVE_VISIBILITY = 0.5


def _landmarks(lms, n: int) -> np.ndarray:
    return np.array([(p.x, p.y, p.z, getattr(p, "visibility", 1.0)) for p in lms.landmark[:n]], np.float32)


def lift_to_camera(
    world_m: np.ndarray, image_px: np.ndarray, weights: np.ndarray, f: float, cx: float, cy: float
) -> np.ndarray | None:
    """Place hip-centred metric joints [N, 3] in the render camera so they project onto `image_px` [N, 2] (mm).

    The body's distance comes from a least-squares translation (rotation taken as identity: mediapipe's world
    axes follow the image, x right, y down, z away): f(X+tx) - (u-cx)(Z+tz) = 0, same for y. Each joint then
    keeps its own depth tz + Z and is back-projected through its 2D landmark, so the render lands exactly on
    the person in the frame while the limbs keep their relative depth.
    """
    w = np.sqrt(np.clip(weights, 0, None)).astype(np.float64)
    if (w > 0).sum() < 3:
        return None
    X, Y, Z = world_m[:, 0].astype(np.float64), world_m[:, 1].astype(np.float64), world_m[:, 2].astype(np.float64)
    du, dv = image_px[:, 0] - cx, image_px[:, 1] - cy
    zeros = np.zeros_like(du)
    rows = np.concatenate(
        [np.stack([np.full_like(du, f), zeros, -du], 1), np.stack([zeros, np.full_like(dv, f), -dv], 1)]
    )
    rhs = np.concatenate([du * Z - f * X, dv * Z - f * Y])
    ww = np.concatenate([w, w])
    sol, *_ = np.linalg.lstsq(rows * ww[:, None], rhs * ww, rcond=None)
    depth = sol[2] + Z
    if not np.all(np.isfinite(sol)) or depth.min() <= 0.05:
        return None
    cam = np.stack([du * depth / f, dv * depth / f, depth], 1)
    return (cam * 1000.0).astype(np.float32)


def _hand(lms) -> np.ndarray:
    if lms is None:
        return np.full((21, 2), -1.0, np.float32)
    return _landmarks(lms, 21)[:, :2].copy()


def _face(lms) -> np.ndarray:
    face = np.full((N_FACE, 2), -1.0, np.float32)
    if lms is None:
        return face
    mesh = np.array([(p.x, p.y) for p in lms.landmark], np.float32)
    for k, v in FACE68_FROM_MESH.items():
        face[k] = mesh[v]
    face[(face < 0).any(1)] = -1
    return face


def convert(result, width: int, height: int) -> PersonPose | None:
    """One mediapipe Holistic result -> PersonPose (normalised 2D, camera-space mm 3D), or None."""
    if result.pose_landmarks is None:
        return None
    lm = _landmarks(result.pose_landmarks, 33)
    vis = lm[:, 3]
    body = np.full((N_BODY, 2), -1.0, np.float32)
    score = np.zeros(N_BODY, np.float32)
    for slot, idx in enumerate(MP_FOR_SLOT):
        if idx < 0:
            continue
        body[slot], score[slot] = lm[idx, :2], vis[idx]
    body[1] = (lm[11, :2] + lm[12, :2]) / 2
    score[1] = 1.0 if min(vis[11], vis[12]) > BODY_SCORE_FLOOR else 0.0
    body[score <= BODY_SCORE_FLOOR] = -1

    hands = np.stack([_hand(result.left_hand_landmarks), _hand(result.right_hand_landmarks)])
    # Holistic names hands from the pose wrists; keep each hand on the wrist it sits closest to.
    lw, rw = lm[15, :2], lm[16, :2]
    if (
        hands[0, 0, 0] >= 0
        and hands[1, 0, 0] < 0
        and np.linalg.norm(hands[0, 0] - rw) < np.linalg.norm(hands[0, 0] - lw)
    ):
        hands = hands[::-1].copy()
    elif (
        hands[1, 0, 0] >= 0
        and hands[0, 0, 0] < 0
        and np.linalg.norm(hands[1, 0] - lw) < np.linalg.norm(hands[1, 0] - rw)
    ):
        hands = hands[::-1].copy()

    joints3d = None
    if result.pose_world_landmarks is not None:
        world = _landmarks(result.pose_world_landmarks, 33)[:, :3]
        px = lm[:, :2] * np.array([width, height], np.float32)
        f = focal_length(height, width)
        # only confidently seen landmarks place the body (guessed off-screen legs would push it away)
        seen = np.where(vis >= SOLVE_VISIBILITY, vis, 0.0)
        if (seen > 0).sum() < 4:
            seen = vis
        cam = lift_to_camera(world, px, seen, f, width / 2, height / 2)
        if cam is not None:
            joints3d = np.zeros((N_JOINTS3D, 3), np.float32)
            for slot in range(14):
                idx = MP_FOR_SLOT[slot]
                if slot == 0:  # render slot 0 is the head centre (SMPL 15): between the ears
                    joints3d[0], ok = (cam[7] + cam[8]) / 2, min(vis[7], vis[8]) >= MIN_VISIBILITY_3D
                elif slot == 1:
                    joints3d[1], ok = (cam[11] + cam[12]) / 2, min(vis[11], vis[12]) >= MIN_VISIBILITY_3D
                else:
                    joints3d[slot], ok = cam[idx], vis[idx] >= MIN_VISIBILITY_3D
                if not ok:
                    joints3d[slot] = 0
    valid = body[score > BODY_SCORE_FLOOR] * np.array([width, height], np.float32)
    pts = lm[:, :2] * np.array([width, height], np.float32)
    pts = pts[vis > BODY_SCORE_FLOOR] if (vis > BODY_SCORE_FLOOR).sum() >= 2 else valid
    if len(pts) == 0:
        return None
    box = np.array([*pts.min(0), *pts.max(0)], np.float32)
    return PersonPose(
        body=body, body_score=score, face=_face(result.face_landmarks), hands=hands, joints3d=joints3d, box=box
    )


class MediaPipePose:
    """Single-person 2D + lifted 3D pose from mediapipe Holistic, offline (models embedded in the wheel)."""

    def __init__(self, video: bool = True, model_complexity: int = 1):
        mp = import_native("mediapipe")
        import_native("mediapipe.python.solutions.holistic")  # one import at a time: see scailflow/native.py

        self._mp = mp
        self.video = video
        # complexity 1 is the pose model the wheel ships; 0 and 2 would be downloaded on first use
        self.model_complexity = model_complexity

    def __call__(self, frames_rgb: np.ndarray) -> list[list[PersonPose]]:
        """RGB uint8 [T, H, W, 3] -> per frame a list with zero or one person."""
        out: list[list[PersonPose]] = []
        h, w = frames_rgb.shape[1:3]
        with self._mp.solutions.holistic.Holistic(
            static_image_mode=not self.video, model_complexity=self.model_complexity, smooth_landmarks=self.video
        ) as model:
            for frame in iterate(frames_rgb, "2d-pose", len(frames_rgb)):
                person = convert(model.process(np.ascontiguousarray(frame)), w, h)
                out.append([] if person is None else [person])
        found = sum(1 for f in out if f)
        log.info("mediapipe found a person in %d of %d frames", found, len(out))
        return out
