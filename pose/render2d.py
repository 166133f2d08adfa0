"""2D drawing: the face/hand overlay on top of the 3D render, how it is composited, and flat 2D limbs.

Overlay (pose-render.md section 3, "2D overlay"): per person on its own black canvas: cheek ellipses between
nose, eyes and ears (then the canvas x0.6), head dots, 20 hand bones in HSV colours with blue joint dots, and
white face dots (eyebrows, eyes, mouth). Canvases are summed with uint8 wrap-around. Each non-zero overlay
channel replaces that channel of the 3D frame; in the mono render any overlay pixel takes the person colour.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from scailflow.pose.skeleton import LIMB_ORDER, LIMBS, PersonPose, limb_palette

CHEEK_LIMBS = (((0, 14), (85, 0, 255)), ((14, 16), (170, 0, 255)), ((0, 15), (255, 0, 255)), ((15, 17), (255, 0, 170)))
HEAD_DOTS = ((0, (255, 0, 0)), (14, (170, 0, 255)), (15, (255, 0, 255)), (16, (255, 0, 170)), (17, (255, 0, 85)))
CHEEK_HALF_WIDTH = 4
HEAD_DOT_RADIUS = 4
CHEEK_DIM = 0.6
HAND_BONES = (
    (0, 1),
    (1, 2),
    (2, 3),
    (3, 4),
    (0, 5),
    (5, 6),
    (6, 7),
    (7, 8),
    (0, 9),
    (9, 10),
    (10, 11),
    (11, 12),
    (0, 13),
    (13, 14),
    (14, 15),
    (15, 16),
    (0, 17),
    (17, 18),
    (18, 19),
    (19, 20),
)
HAND_COLOURS = tuple(
    tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(k / len(HAND_BONES), 1.0, 1.0))
    for k in range(len(HAND_BONES))
)
HAND_JOINT_COLOUR = (0, 0, 255)
FACE_DRAWN = tuple(range(17, 27)) + tuple(range(36, 68))  # eyebrows, eyes, mouth (no jaw, no nose)
FACE_COLOUR = (255, 255, 255)


def line_width(height: int, width: int) -> int:
    """Hand bone width and hand/face dot radius: clamp(int(min(H, W) / 300), 1, 2)."""
    return int(np.clip(int(min(height, width) / 300), 1, 2))


def _px(points: np.ndarray, height: int, width: int) -> np.ndarray:
    return points * np.array([width, height], np.float32)


def draw_person_overlay(person: PersonPose, height: int, width: int) -> np.ndarray:
    """One person's face/hand overlay on a black RGB uint8 canvas."""
    canvas = np.zeros((height, width, 3), np.uint8)
    t = line_width(height, width)
    body = _px(person.body, height, width)
    vis = person.visible()

    for (i, j), colour in CHEEK_LIMBS:
        if not (vis[i] and vis[j]):
            continue
        (x0, y0), (x1, y1) = body[i], body[j]
        length = float(np.hypot(x1 - x0, y1 - y0))
        angle = float(np.degrees(np.arctan2(y1 - y0, x1 - x0)))
        poly = cv2.ellipse2Poly(
            (int((x0 + x1) / 2), int((y0 + y1) / 2)), (int(length / 2), CHEEK_HALF_WIDTH), int(angle), 0, 360, 1
        )
        cv2.fillConvexPoly(canvas, poly, colour)
    canvas = (canvas * CHEEK_DIM).astype(np.uint8)
    for i, colour in HEAD_DOTS:
        if vis[i]:
            cv2.circle(canvas, (int(body[i, 0]), int(body[i, 1])), HEAD_DOT_RADIUS, colour, thickness=-1)

    for hand in person.hands:
        pts = _px(hand, height, width)
        ok = (pts[:, 0] > 0) & (pts[:, 1] > 0) & (hand[:, 0] >= 0) & (hand[:, 1] >= 0)
        for (i, j), colour in zip(HAND_BONES, HAND_COLOURS):
            if ok[i] and ok[j]:
                cv2.line(
                    canvas, (int(pts[i, 0]), int(pts[i, 1])), (int(pts[j, 0]), int(pts[j, 1])), colour, thickness=t
                )
        for (x, y), good in zip(pts, ok):
            if good:
                cv2.circle(canvas, (int(x), int(y)), t, HAND_JOINT_COLOUR, thickness=-1)

    face = _px(person.face, height, width)
    for i in FACE_DRAWN:
        x, y = face[i]
        if x > 0 and y > 0 and person.face[i, 0] >= 0:
            cv2.circle(canvas, (int(x), int(y)), t, FACE_COLOUR, thickness=-1)
    return canvas


def composite(frame3d: np.ndarray, overlays: list[np.ndarray]) -> np.ndarray:
    """Sum the per-person overlays (uint8 wrap) and let every non-zero channel replace the 3D frame's."""
    out = frame3d.copy()
    if not overlays:
        return out
    total = overlays[0].copy()
    for ov in overlays[1:]:
        total += ov  # uint8 arithmetic wraps, as the reference summation does
    nz = total != 0
    out[nz] = total[nz]
    return out


def composite_mono(mono: np.ndarray, overlays: list[np.ndarray], colours: list[tuple[int, int, int]]) -> np.ndarray:
    """Mono render: every pixel of person p's overlay takes person p's colour (later persons on top)."""
    out = mono.copy()
    for ov, colour in zip(overlays, colours):
        out[ov.any(-1)] = colour
    return out


def limb_width(person: PersonPose, height: int, width: int) -> int:
    """Flat-limb thickness in pixels: a 43 mm capsule against a ~500 mm neck-to-hip torso."""
    body = _px(person.body, height, width)
    vis = person.visible()
    hips = [i for i in (8, 11) if vis[i]]
    if vis[1] and hips:
        torso = float(np.linalg.norm(body[1] - body[hips].mean(0)))
    elif vis[2] and vis[5]:
        torso = 1.4 * float(np.linalg.norm(body[2] - body[5]))
    else:
        torso = 0.25 * min(height, width)
    return max(2, int(round(torso * 2 * 21.5 / 500.0)))


def draw_flat_limbs(
    people: list[PersonPose], height: int, width: int, style: str = "v2"
) -> tuple[np.ndarray, np.ndarray]:
    """2D-only fallback: limbs as flat lines in the palette colours (RGB) and a person-id map (-1 = none)."""
    img = np.zeros((height, width, 3), np.uint8)
    ids = np.full((height, width), -1, np.int16)
    for p, person in enumerate(people):
        palette = limb_palette(p, len(people), style)
        body = _px(person.body, height, width)
        vis = person.visible()
        thick = limb_width(person, height, width)
        mask = np.zeros((height, width), np.uint8)
        for li in LIMB_ORDER:
            i, j = LIMBS[li]
            if not (vis[i] and vis[j]):
                continue
            a, b = (int(body[i, 0]), int(body[i, 1])), (int(body[j, 0]), int(body[j, 1]))
            colour = tuple(int(c) for c in palette[li])
            cv2.line(img, a, b, colour, thickness=thick)
            cv2.line(mask, a, b, 1, thickness=thick)
        ids[mask > 0] = p
    return img, ids
