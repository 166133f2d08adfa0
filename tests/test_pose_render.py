"""Renderer (3D capsules, 2D overlay, composite), tracker and alignment."""

from __future__ import annotations

import numpy as np
import pytest

from scailflow.pose.align import Alignment, apply_to_overlay, fit, fit_to_reference
from scailflow.pose.render2d import composite, composite_mono, draw_flat_limbs, draw_person_overlay
from scailflow.pose.render3d import Camera, Renderer, build_capsules
from scailflow.pose.skeleton import (
    PALETTE_P0,
    PALETTE_P1,
    PALETTE_V1,
    PersonPose,
    empty_person,
    focal_length,
    person_colour,
)
from scailflow.pose.tracker import track

H, W = 120, 200


def standing(x: float = 0.0, z: float = 1500.0) -> np.ndarray:
    """[18, 3] joints (mm) of a person facing the camera: their right side at -x (image left)."""
    j = np.zeros((18, 3), np.float32)
    pts = {
        0: (0, -650),
        1: (0, -450),
        2: (-180, -450),
        3: (-200, -180),
        4: (-210, 60),
        5: (180, -450),
        6: (200, -180),
        7: (210, 60),
        8: (-100, 50),
        9: (-110, 450),
        10: (-110, 850),
        11: (100, 50),
        12: (110, 450),
        13: (110, 850),
    }
    for k, (px, py) in pts.items():
        j[k] = (px + x, py, z)
    return j


def pixel_of(cam: Camera, p) -> tuple[int, int]:
    u, v = cam.project(np.asarray(p, np.float64))
    return int(round(v)), int(round(u))


def render_one(joints: np.ndarray, style: str = "v2", h: int = H, w: int = W):
    caps = build_capsules(joints, style)
    ((rgb, ids),) = list(Renderer(h, w, device="cpu").render(caps))
    return rgb, ids


def test_focal_length_is_55_degree_fov():
    assert focal_length(512, 896) == pytest.approx(0.9605 * 896, rel=1e-3)


def test_limb_colours_sides_and_black_background():
    j = standing()
    rgb, ids = render_one(j[None, None])
    cam = Camera.default(H, W)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[-1, -1].tolist() == [0, 0, 0] and ids[0, 0] == -1
    # right upper arm (limb 2, P1 255,60,0) on the image left, left upper arm (limb 4, P1 0,130,255) on the right
    r = rgb[pixel_of(cam, (j[2] + j[3]) / 2)].astype(int)
    l_ = rgb[pixel_of(cam, (j[5] + j[6]) / 2)].astype(int)
    assert pixel_of(cam, j[2])[1] < W / 2 < pixel_of(cam, j[5])[1]
    assert r[0] > r[1] > r[2], r
    assert l_[2] > l_[1] > l_[0], l_
    # right thigh (limb 7, green 0,255,50) vs left thigh (limb 10, violet 80,0,255)
    rt = rgb[pixel_of(cam, (j[8] + j[9]) / 2)].astype(int)
    lt = rgb[pixel_of(cam, (j[11] + j[12]) / 2)].astype(int)
    assert rt[1] > rt[0] and rt[1] > rt[2], rt
    assert lt[2] > lt[1] and lt[0] > lt[1], lt
    assert ids[pixel_of(cam, (j[2] + j[3]) / 2)] == 0
    assert (rgb.sum(-1) > 0).mean() < 0.25


def _expected_on_horizontal_capsule(
    cam: Camera, row: int, col: int, y0: float, z0: float, colour, near: float, far: float
):
    """Shade by hand: the ray through (col, row) meets the cylinder (y - y0)^2 + (z - z0)^2 = r^2 along x."""
    r = 21.5
    d = np.array([(col - cam.cx) / cam.fx, (row - cam.cy) / cam.fy, 1.0])
    d /= np.linalg.norm(d)
    a = d[1] ** 2 + d[2] ** 2
    b = -2 * (y0 * d[1] + z0 * d[2])
    c = y0**2 + z0**2 - r**2
    t = (-b - np.sqrt(b * b - 4 * a * c)) / (2 * a)
    p = t * d
    n = np.array([0.0, p[1] - y0, p[2] - z0]) / r
    diff = max(-n[2], 0)
    half = -d + np.array([0, 0, -1.0])
    half /= np.linalg.norm(half)
    spec = max(n @ half, 0) ** 32
    depth = np.clip(1 - (p[2] - near) / (far - 0.1), 0, 1)
    rgb = (np.asarray(colour) / 300 + 0.15) * (0.3 + 0.7 * diff) * depth + 0.5 * spec * depth
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def test_shading_and_depth_fade_match_the_formulas():
    # two horizontal shoulders-only limbs (limb 0, neck -> right shoulder) at 2 m and 6 m
    near_j, far_j = np.zeros((18, 3), np.float32), np.zeros((18, 3), np.float32)
    near_j[1], near_j[2] = (60, -150, 2000), (-400, -150, 2000)
    far_j[1], far_j[2] = (400, 450, 6000), (-600, 450, 6000)
    joints = np.stack([near_j[None], far_j[None]])  # 2 persons -> P0 (near), P1 (far)
    rgb, ids = render_one(joints)
    cam = Camera.default(H, W)
    z_min, z_max = 2000.0, 6000.0
    near, far = max(z_min, 0.1), min(z_max + 6000, 2e4)
    row0 = pixel_of(cam, (0, -150, 2000))[0]
    for row, col in [(row0, 80), (row0 + 1, 80), (row0 - 1, 70)]:
        want = _expected_on_horizontal_capsule(cam, row, col, -150.0, 2000.0, PALETTE_P0[0], near, far)
        np.testing.assert_allclose(rgb[row, col].astype(int), want.astype(int), atol=1)
        assert ids[row, col] == 0
    row1 = pixel_of(cam, (0, 450, 6000))[0]
    want = _expected_on_horizontal_capsule(cam, row1, 100, 450.0, 6000.0, PALETTE_P1[0], near, far)
    np.testing.assert_allclose(rgb[row1, 100].astype(int), want.astype(int), atol=1)
    assert rgb[row1, 100].max() < rgb[row0, 80].max()  # faded with depth
    assert ids[row1, 100] == 1


def test_palettes_one_person_p1_two_persons_p0_then_p1_and_v1():
    one = build_capsules(standing()[None, None])
    np.testing.assert_allclose(one.colour[0], PALETTE_P1[0] / 300 + 0.15)
    two = build_capsules(np.stack([standing(-400)[None], standing(400)[None]]))
    np.testing.assert_allclose(two.colour[0], PALETTE_P0[0] / 300 + 0.15)
    np.testing.assert_allclose(two.colour[13], PALETTE_P1[0] / 300 + 0.15)
    np.testing.assert_allclose(build_capsules(standing()[None, None], "v1").colour[0], PALETTE_V1[0] / 300 + 0.15)
    # drawing order 0, 2, 3, 1, 4 ...: the second capsule is limb 2 (right upper arm)
    np.testing.assert_allclose(one.colour[1], PALETTE_P1[2] / 300 + 0.15)


def test_missing_joint_skips_its_limbs_and_empty_clip_is_black():
    j = standing()
    j[3] = 0  # right elbow missing: limbs 2 and 3 vanish
    rgb, _ = render_one(j[None, None])
    cam = Camera.default(H, W)
    assert rgb[pixel_of(cam, (standing()[2] + standing()[3]) / 2)].sum() == 0
    rgb0, ids0 = render_one(np.zeros((1, 1, 18, 3), np.float32))
    assert rgb0.max() == 0 and ids0.max() == -1


def test_renders_frames_in_batches_identically():
    joints = np.stack([standing(x=30 * t) for t in range(5)])[None]
    caps = build_capsules(joints)
    small = Renderer(H, W, device="cpu")
    small.budget = 1  # forces one frame per chunk
    a = [f for f, _ in small.render(caps)]
    b = [f for f, _ in Renderer(H, W, device="cpu").render(caps)]
    assert len(a) == 5 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[4])


# ------------------------------------------------------------------------------------------------ 2D overlay
def person_with_face_and_hand() -> PersonPose:
    body = np.full((18, 2), -1.0, np.float32)
    score = np.zeros(18, np.float32)
    for k, (x, y) in {0: (100, 40), 14: (92, 34), 15: (108, 34), 16: (84, 38), 17: (116, 38)}.items():
        body[k], score[k] = (x / W, y / H), 0.9
    hands = np.full((2, 21, 2), -1.0, np.float32)
    hands[1, :, 0] = np.linspace(40, 60, 21) / W
    hands[1, :, 1] = 90 / H
    face = np.full((68, 2), -1.0, np.float32)
    face[40] = (150 / W, 20 / H)  # an eye point: drawn
    face[5] = (150 / W, 60 / H)  # jaw: not drawn
    return PersonPose(body=body, body_score=score, face=face, hands=hands)


def test_overlay_dots_colours_and_what_is_not_drawn():
    ov = draw_person_overlay(person_with_face_and_hand(), H, W)
    assert ov[40, 100].tolist() == [255, 0, 0]  # nose dot
    assert ov[38, 116].tolist() == [255, 0, 85]  # left ear dot
    assert ov[90, 40].tolist() == [0, 0, 255]  # hand joint dot
    assert ov[20, 150].tolist() == [255, 255, 255]  # face point 40
    assert ov[60, 150].tolist() == [0, 0, 0]  # jaw point not drawn
    # cheek ellipse between the right eye and ear, dimmed x0.6: (170, 0, 255) -> (102, 0, 153)
    assert ov[36, 88].tolist() == [102, 0, 153]
    assert ov[0, 0].tolist() == [0, 0, 0]


def test_composite_replaces_nonzero_channels_and_mono_takes_person_colour():
    frame = np.full((4, 4, 3), 100, np.uint8)
    ov = np.zeros((4, 4, 3), np.uint8)
    ov[1, 1] = (255, 0, 0)
    ov2 = np.zeros((4, 4, 3), np.uint8)
    ov2[1, 1] = (10, 0, 0)
    ov2[2, 2] = (0, 200, 0)
    out = composite(frame, [ov, ov2])
    assert out[1, 1].tolist() == [9, 100, 100]  # 255 + 10 wraps to 9
    assert out[2, 2].tolist() == [100, 200, 100]
    assert out[0, 0].tolist() == [100, 100, 100]
    mono = composite_mono(np.zeros((4, 4, 3), np.uint8), [ov, ov2], [person_colour(0), person_colour(1)])
    assert mono[2, 2].tolist() == [255, 0, 0] and mono[0, 0].tolist() == [0, 0, 0]


def test_person_colours_and_legacy_swap():
    assert [person_colour(i) for i in range(6)] == [
        (0, 0, 255),
        (255, 0, 0),
        (0, 255, 0),
        (255, 0, 255),
        (0, 255, 255),
        (255, 255, 0),
    ]
    assert person_colour(0, legacy=True) == (255, 0, 0) and person_colour(1, legacy=True) == (0, 0, 255)
    assert person_colour(4, legacy=True) == (255, 255, 0) and person_colour(2, legacy=True) == (0, 255, 0)


def body_person(points: dict[int, tuple[float, float]], box=None, w: int = W, h: int = H) -> PersonPose:
    body = np.full((18, 2), -1.0, np.float32)
    score = np.zeros(18, np.float32)
    for k, (x, y) in points.items():
        body[k], score[k] = (x / w, y / h), 0.9
    return PersonPose(body=body, body_score=score, box=None if box is None else np.array(box, np.float32))


def test_flat_limbs_fallback_draws_palette_colours_and_ids():
    p = body_person({1: (100, 30), 2: (80, 30), 3: (70, 60), 5: (120, 30), 6: (130, 60), 8: (90, 80), 11: (110, 80)})
    img, ids = draw_flat_limbs([p], H, W)
    assert img[45, 75].tolist() == PALETTE_P1[2].astype(int).tolist()  # right upper arm
    assert img[45, 125].tolist() == PALETTE_P1[4].astype(int).tolist()  # left upper arm
    assert ids[45, 75] == 0 and ids[0, 0] == -1 and img[0, 0].sum() == 0


# ------------------------------------------------------------------------------------------------ tracker
def test_tracker_orders_left_to_right_and_keeps_identity():
    def person(x):
        return body_person({1: (x, 30), 2: (x - 10, 30)}, box=(x - 20, 10, x + 20, 110))

    frames = [[person(150), person(50)], [person(55), person(145)], [person(140)], [person(60), person(135)]]
    tracks = track(frames, W, H, max_persons=2)
    assert len(tracks) == 2
    xs = [[None if p.box is None else (p.box[0] + p.box[2]) / 2 for p in tr] for tr in tracks]
    assert xs[0] == [50, 55, None, 60] and xs[1] == [150, 145, 140, 135]


def test_tracker_keeps_the_largest_and_drops_tiny_boxes():
    big = body_person({1: (150, 30), 2: (140, 30)}, box=(100, 0, 200, 120))
    mid = body_person({1: (30, 30), 2: (20, 30)}, box=(0, 20, 60, 100))
    tiny = body_person({1: (90, 30), 2: (85, 30)}, box=(88, 28, 92, 32))
    tracks = track([[big, tiny, mid]], W, H, max_persons=2)
    assert [t[0] is mid for t in tracks] == [True, False] and tracks[1][0] is big
    assert len(track([[big, tiny, mid]], W, H, max_persons=1)) == 1
    assert track([[empty_person()]], W, H) == []


# ------------------------------------------------------------------------------------------------ alignment
def test_alignment_recovers_a_known_scale_and_shift():
    h, w = 512, 896
    drv = PersonPose(body=np.zeros((18, 2), np.float32), body_score=np.ones(18, np.float32), joints3d=standing(z=4000))
    truth = Alignment(1.2, 0.95, 40.0, -25.0)
    ref_px = truth.camera(h, w).project(standing(z=4000)[:14].astype(np.float64))
    ref = body_person({k: tuple(ref_px[k]) for k in range(14)}, w=w, h=h)
    got = fit_to_reference(ref, drv, h, w)
    assert got.m == pytest.approx(1.2, abs=2e-3) and got.s == pytest.approx(0.95, abs=2e-3)
    assert got.p == pytest.approx(40, abs=1.0) and got.q == pytest.approx(-25, abs=1.0)


def test_half_body_reference_uses_upper_body_and_bounds_hold():
    h, w = 512, 896
    drv = PersonPose(body=np.zeros((18, 2), np.float32), body_score=np.ones(18, np.float32), joints3d=standing(z=4000))
    big = Alignment(2.0, 1.0, 0.0, 300.0).camera(h, w).project(standing(z=4000)[:14].astype(np.float64))
    ref = body_person({k: tuple(big[k]) for k in (0, 1, 2, 3, 5, 6)}, w=w, h=h)  # half-body reference
    got = fit_to_reference(ref, drv, h, w)
    assert got.m == pytest.approx(1.4)  # clipped to the bound
    assert -h <= got.q <= h
    # neck weighted 8x: it lands close to the reference neck
    neck = got.camera(h, w).project(standing(z=4000)[1].astype(np.float64))
    assert np.linalg.norm(neck - big[1]) < np.linalg.norm(
        Alignment().camera(h, w).project(standing(z=4000)[1].astype(np.float64)) - big[1]
    )


def test_alignment_moves_hands_with_the_wrist_and_2d_fallback_maps_points():
    h, w = 512, 896
    j = standing(z=3000)
    cam0 = Camera.default(h, w)
    wrist = cam0.project(j[4].astype(np.float64))
    hands = np.full((2, 21, 2), -1.0, np.float32)
    hands[1, 0] = wrist / [w, h]
    hands[1, 1] = (wrist + [10, 0]) / [w, h]
    p = PersonPose(
        body=np.full((18, 2), -1.0, np.float32), body_score=np.zeros(18, np.float32), hands=hands, joints3d=j
    )
    al = Alignment(1.2, 1.0, 30.0, 0.0)
    moved = apply_to_overlay(p, al, h, w)
    new_wrist = al.camera(h, w).project(j[4].astype(np.float64))
    np.testing.assert_allclose(moved.hands[1, 0] * [w, h], new_wrist, atol=1e-3)
    np.testing.assert_allclose((moved.hands[1, 1] - moved.hands[1, 0]) * [w, h], [12, 0], atol=1e-3)
    assert np.all(moved.hands[0] == -1)
    flat = body_person({1: (w / 2, h / 2 + 10)}, w=w, h=h)
    m2 = apply_to_overlay(flat, Alignment(2.0, 1.0, 5.0, 0.0), h, w)
    np.testing.assert_allclose(m2.body[1] * [w, h], [w / 2 + 5, h / 2 + 20], atol=1e-3)


def test_fit_requires_the_neck():
    ok = np.zeros(18, bool)
    with pytest.raises(Exception, match="neck"):
        fit(np.zeros((18, 2)), ok, np.zeros((18, 2)), ok, 100, 100)


def test_tight_culling_changes_no_pixel():
    from scailflow.pose.render3d import candidate_table

    j = standing(x=120, z=1400)
    j[3] = (60, -250, 1100)  # a forearm pointing at the camera: strongly oblique capsules
    j[6] = (330, -300, 900)
    caps = build_capsules(j[None, None])
    cam = Camera.default(H, W)
    loose, _ = candidate_table(caps.a[0], caps.b[0], caps.drawn[0], cam, H, W, tight=False)
    tight, _ = candidate_table(caps.a[0], caps.b[0], caps.drawn[0], cam, H, W)
    assert len(tight) < len(loose) and np.isin(tight, loose).all()
    fast = Renderer(H, W, device="cpu")
    slow = Renderer(H, W, device="cpu")
    slow.tight_culling = False
    ((a, ia),) = list(fast.render(caps))
    ((b, ib),) = list(slow.render(caps))
    assert a.any(-1).sum() > 100
    assert np.abs(a.astype(int) - b).max() <= 1 and np.array_equal(ia, ib)
