"""The skeleton every backend maps onto: OpenPose-18 slots, render limbs, palettes and per-frame pose data.

Slots (2D body and 3D joints share them): 0 nose/head, 1 neck, 2-4 right shoulder/elbow/wrist, 5-7 left,
8-10 right hip/knee/ankle, 11-13 left, 14/15 right/left eye, 16/17 right/left ear. 3D joints use slots 0-13
(slot 0 is the head centre, SMPL joint 15); 14-17 stay zero in 3D.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scailflow.layout import PERSON_COLOURS

N_BODY = 18
N_JOINTS3D = 18
N_FACE = 68
N_HAND = 21

# Render limbs (pairs of slots), indexed as in pose-render.md section 3.
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2),
    (1, 5),
    (2, 3),
    (3, 4),
    (5, 6),
    (6, 7),
    (1, 8),
    (8, 9),
    (9, 10),
    (1, 11),
    (11, 12),
    (12, 13),
    (1, 0),
)
# Drawing order: 0, 2, 3, 1, 4, 5, ..., 12.
LIMB_ORDER: tuple[int, ...] = (0, 2, 3, 1) + tuple(range(4, 13))

PALETTE_V1 = np.array(
    [
        (255, 0, 0),
        (0, 255, 255),
        (255, 85, 0),
        (255, 170, 0),
        (0, 170, 255),
        (0, 85, 255),
        (180, 255, 0),
        (0, 255, 0),
        (0, 255, 85),
        (0, 0, 255),
        (85, 0, 255),
        (170, 0, 255),
        (150, 150, 150),
    ],
    dtype=np.float32,
)
PALETTE_P0 = np.array(
    [
        (255, 150, 150),
        (180, 230, 240),
        (255, 180, 140),
        (255, 215, 150),
        (160, 200, 255),
        (100, 120, 255),
        (200, 255, 100),
        (100, 255, 100),
        (140, 255, 180),
        (120, 140, 255),
        (180, 90, 255),
        (190, 120, 255),
        (210, 210, 210),
    ],
    dtype=np.float32,
)
PALETTE_P1 = np.array(
    [
        (255, 20, 20),
        (0, 230, 255),
        (255, 60, 0),
        (255, 110, 0),
        (0, 130, 255),
        (0, 70, 255),
        (160, 255, 40),
        (0, 255, 50),
        (0, 255, 100),
        (0, 0, 255),
        (80, 0, 255),
        (160, 0, 255),
        (130, 130, 130),
    ],
    dtype=np.float32,
)

# Person colours of the masks (RGB), in left-to-right order: scailflow/layout.py's palette (PERSON_COLOURS).
# The official pose-mode mask render reads the BGR tuples as RGB: red<->blue and cyan<->yellow swap.
LEGACY_PERSON_COLOURS: tuple[tuple[int, int, int], ...] = tuple(c[::-1] for c in PERSON_COLOURS)

# SMPL-24 joint index -> render slot.
SMPL_TO_SLOT: dict[int, int] = {
    15: 0,
    12: 1,
    17: 2,
    19: 3,
    21: 4,
    16: 5,
    18: 6,
    20: 7,
    2: 8,
    5: 9,
    8: 10,
    1: 11,
    4: 12,
    7: 13,
}

# Capsule radius (mm) and horizontal/vertical field of view used by the render camera.
CAPSULE_RADIUS_MM = 21.5
FOV_DEG = 55.0


def focal_length(height: int, width: int) -> float:
    """Pinhole focal length in pixels for the render camera: max(H, W) / (2 tan(27.5 deg))."""
    return max(height, width) / (2.0 * np.tan(np.deg2rad(FOV_DEG / 2.0)))


def person_colour(index: int, legacy: bool = False) -> tuple[int, int, int]:
    """Mask colour (RGB) of the person at left-to-right position `index`."""
    table = LEGACY_PERSON_COLOURS if legacy else PERSON_COLOURS
    return table[index % len(table)]


def limb_palette(person: int, n_persons: int, style: str = "v2") -> np.ndarray:
    """[13, 3] RGB limb colours for one person: v2 alternates P0/P1 (P1 when alone), v1 is the base table."""
    if style == "v1":
        return PALETTE_V1
    off = 1 if n_persons == 1 else 0
    return (PALETTE_P0, PALETTE_P1)[(person + off) % 2]


@dataclass
class PersonPose:
    """One person in one frame. 2D coordinates are normalised (x/W, y/H); -1 marks a missing point.

    body: [18, 2] OpenPose-18; body_score: [18]; face: [68, 2]; hands: [2, 21, 2] (left, right);
    joints3d: [18, 3] camera-space millimetres (x right, y down, z forward) or None; box: xyxy pixels.
    """

    body: np.ndarray
    body_score: np.ndarray
    face: np.ndarray = field(default_factory=lambda: np.full((N_FACE, 2), -1.0, np.float32))
    hands: np.ndarray = field(default_factory=lambda: np.full((2, N_HAND, 2), -1.0, np.float32))
    joints3d: np.ndarray | None = None
    box: np.ndarray | None = None

    def visible(self, threshold: float = 0.3) -> np.ndarray:
        """Boolean [18]: body slots that were found."""
        return (self.body_score > threshold) & (self.body[:, 0] >= 0) & (self.body[:, 1] >= 0)


def empty_person() -> PersonPose:
    """A person with nothing found (keeps a track's slot in frames where it was lost)."""
    return PersonPose(body=np.full((N_BODY, 2), -1.0, np.float32), body_score=np.zeros(N_BODY, np.float32))


def smpl_to_slots(joints_smpl: np.ndarray) -> np.ndarray:
    """[24, 3] SMPL joints -> [18, 3] render slots (14-17 zero)."""
    out = np.zeros((N_JOINTS3D, 3), np.float32)
    for smpl, slot in SMPL_TO_SLOT.items():
        out[slot] = joints_smpl[smpl]
    return out
