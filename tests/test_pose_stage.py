"""prepare_driving end to end: copy, embedded mediapipe default on the astronaut, DWPose + NLF test models, CLI."""

from __future__ import annotations

import argparse
import json
import logging

import cv2
import numpy as np
import pytest
from skimage import data

from scailflow.errors import InputError
from scailflow.layout import PERSON_COLOURS
from scailflow.media import read_video, write_video
from scailflow.pose import PoseWeights, prepare_driving
from scailflow.pose.cli import add_arguments, run
from scailflow.pose.mediapipe_pose import MediaPipePose
from scailflow.pose.options import PoseOptions
from tests.test_pose_fakes import blob_image, build_nlf, build_simcc, build_yolox, yolox_raw

CONFIDENT = [0, 1, 2, 5, 14, 15, 16, 17]  # nose, neck, shoulders, eyes, ears: clearly visible in the photo
FACE = [0, 14, 15, 16, 17]  # sharp landmarks; the space suit leaves the shoulders ambiguous by tens of pixels


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def still_person(astronaut):
    ((person,),) = MediaPipePose(video=False)(astronaut[None])
    return person


@pytest.fixture(scope="module")
def still_keypoints(still_person) -> np.ndarray:
    return still_person.body * 512


def animated_copy(img: np.ndarray, n: int = 8, size=(448, 576)):
    """Frames of `img` scaled 0.8-0.9, shifted and slightly rotated on a black canvas, with their 2x3 maps."""
    frames, maps = [], []
    for t in range(n):
        m = cv2.getRotationMatrix2D((256, 256), 3.0 * np.sin(t / 2), 0.8 + 0.1 * t / n)
        m[:, 2] += (40 + 6 * t, -20 + 2 * t)
        frames.append(cv2.warpAffine(img, m, (size[1], size[0]), flags=cv2.INTER_LINEAR))
        maps.append(m)
    return np.stack(frames), maps


def small_clip(img: np.ndarray, n: int) -> np.ndarray:
    """The astronaut at 200x200 walking right on a 288x224 black canvas."""
    small = cv2.resize(img, (200, 200), interpolation=cv2.INTER_AREA)
    frames = np.zeros((n, 224, 288, 3), np.uint8)
    for t in range(n):
        frames[t, 12:212, 20 + 4 * t : 220 + 4 * t] = small
    return frames


def test_embedded_default_finds_the_astronaut(still_keypoints):
    kp = still_keypoints
    assert np.all(kp[CONFIDENT] >= 0)
    # face in the upper middle, her right shoulder on the image left, eyes above the nose
    assert 180 < kp[0, 0] < 270 and 90 < kp[0, 1] < 170
    assert kp[2, 0] < kp[0, 0] < kp[5, 0]
    assert kp[14, 1] < kp[0, 1] and kp[15, 1] < kp[0, 1]


def test_embedded_default_maps_the_face_mesh_onto_the_drawn_68_points(still_person, still_keypoints):
    face = still_person.face * 512
    drawn = list(range(17, 27)) + list(range(36, 68))
    assert np.all(face[drawn] > 0) and np.all(face[:17] == -512) and np.all(face[27:36] == -512)
    right_eye, left_eye = face[36:42].mean(0), face[42:48].mean(0)
    assert np.linalg.norm(right_eye - still_keypoints[14]) < 15 and np.linalg.norm(left_eye - still_keypoints[15]) < 15
    assert np.all(face[17:27, 1].mean() < face[36:48, 1].mean())  # brows above the eyes
    assert np.all(face[48:68, 1] > still_keypoints[0, 1])  # mouth below the nose
    assert face[48, 0] < face[54, 0] and face[39, 0] < face[42, 0]  # image-left corners first


def test_embedded_default_tracks_a_warped_animated_copy(astronaut, still_keypoints):
    frames, maps = animated_copy(astronaut)
    people = MediaPipePose(video=True)(frames)
    errors = []
    for (person,), m in zip(people, maps):
        got = person.body[FACE] * [frames.shape[2], frames.shape[1]]
        want = still_keypoints[FACE] @ m[:, :2].T + m[:, 2]
        errors.append(np.linalg.norm(got - want, axis=1))
        assert person.joints3d is not None and np.all(person.joints3d[[0, 1, 2, 5], 2] > 0)
    errors = np.array(errors)
    assert np.median(errors) < 4.0, errors.round(1)
    assert errors[:, :3].max() < 8.0, errors.round(1)  # nose and eyes


def test_end_to_end_copies_mp4_bytes_and_reencodes_other_containers(tmp_path):
    frames = np.stack([blob_image(64, 96, [(10 + 5 * t, 30)]) for t in range(6)])
    src = write_video(tmp_path / "drive.mp4", frames, 12)
    res = prepare_driving(src, tmp_path / "out")
    assert res.rendered == tmp_path / "out" / "rendered_v2.mp4" and res.mask_render is None
    assert res.rendered.read_bytes() == src.read_bytes()
    assert res.frames == 6 and res.fps == pytest.approx(12) and res.backend == "copy"
    mkv = tmp_path / "drive.mkv"
    mkv.write_bytes(src.read_bytes())  # an mp4 stream under another name: decodable, not copied
    res2 = prepare_driving(mkv, tmp_path / "out2")
    assert res2.backend == "reencode" and len(read_video(res2.rendered)[0]) == 6
    assert res2.to_dict()["rendered"].endswith("rendered_v2.mp4")


def test_pose_mode_with_the_embedded_default(tmp_path, astronaut):
    frames = small_clip(astronaut, 4)
    src = write_video(tmp_path / "drive.mp4", frames, 15.0)
    res = prepare_driving(src, tmp_path / "out", driving="pose", weights=PoseWeights(), device="cpu")
    assert res.backend == "mediapipe" and res.frames == 4 and res.fps == 15 and res.persons == 1
    video, fps = read_video(res.rendered)
    mask, _ = read_video(res.mask_render)
    assert video.shape == frames.shape and mask.shape == frames.shape and fps == pytest.approx(15)
    lit = video.max(-1) > 60
    assert 0.005 < lit.mean() < 0.5
    colours = {tuple(c) for c in mask.reshape(-1, 3)}
    assert colours == {(0, 0, 0), PERSON_COLOURS[0]}  # lossless: exact blue on black
    on = mask.any(-1)
    assert (on & lit).sum() / lit.sum() > 0.9
    # the render sits on the person: its head (grey limb 12 ends there) is near her face at about (107, 62)
    ys, xs = np.nonzero(on[0])
    top = ys < np.percentile(ys, 5)
    assert abs(np.median(xs[top]) - 107) < 25 and abs(np.median(ys[top]) - 55) < 30
    assert abs(np.median(xs) - 110) < 40
    legacy = prepare_driving(
        src,
        tmp_path / "legacy",
        PoseOptions(legacy_mask_colours=True),
        driving="pose",
        weights=PoseWeights(),
        device="cpu",
    )
    lm, _ = read_video(legacy.mask_render)
    assert {tuple(c) for c in lm.reshape(-1, 3)} == {(0, 0, 0), (255, 0, 0)}


def _two_person_setup(tmp_path, frames_n=3):
    h, w = 96, 160
    spots = [(40, 40), (120, 44)]
    frames = np.stack([blob_image(h, w, spots, sigma=2.5)] * frames_n)
    ratio = min(640 / h, 640 / w)
    det = build_yolox(tmp_path / "yolox_l.onnx", yolox_raw([((95, 5, 150, 90), 0.9), ((10, 5, 70, 90), 0.8)], ratio))
    pose = build_simcc(tmp_path / "dw-ll_ucoco_384.onnx")
    src = write_video(tmp_path / "two.mp4", frames, 8)
    return src, det, pose, spots


def test_pose_mode_dwpose_nlf_two_people_palettes_and_mask_colours(tmp_path):
    src, det, pose, spots = _two_person_setup(tmp_path)
    nlf = build_nlf(tmp_path / "nlf_l_multi_0.3.2.torchscript")
    res = prepare_driving(
        src,
        tmp_path / "out",
        driving="pose",
        device="cpu",
        weights=PoseWeights(dwpose_det=det, dwpose_pose=pose, nlf=nlf),
    )
    assert res.backend == "dwpose+nlf" and res.persons == 2
    video, _ = read_video(res.rendered)
    mask, _ = read_video(res.mask_render)
    left, right = mask[0, :, :80], mask[0, :, 80:]
    blue, red = np.array(PERSON_COLOURS[0]), np.array(PERSON_COLOURS[1])
    assert (left == blue).all(-1).sum() > 50 and (left == red).all(-1).sum() == 0
    assert (right == red).all(-1).sum() > 50 and (right == blue).all(-1).sum() == 0
    # left person drawn with P0 (pale), right with P1 (saturated): the pale render has higher minimum channels
    vl, vr = video[0, :, :80].reshape(-1, 3), video[0, :, 80:].reshape(-1, 3)
    vl, vr = vl[vl.max(-1) > 100], vr[vr.max(-1) > 100]
    assert np.median(vl.min(-1)) > np.median(vr.min(-1))


def test_pose_mode_without_nlf_falls_back_to_flat_2d_and_says_so(tmp_path, caplog):
    src, det, pose, _ = _two_person_setup(tmp_path)
    with caplog.at_level(logging.INFO, logger="scailflow.pose"):
        res = prepare_driving(
            src,
            tmp_path / "out",
            driving="pose",
            device="cpu",
            max_persons=1,
            weights=PoseWeights(dwpose_det=det, dwpose_pose=pose),
        )
    assert res.backend == "dwpose-2d" and res.persons == 1
    assert "2D-only fallback" in caplog.text
    mask, _ = read_video(res.mask_render)
    assert {tuple(c) for c in mask.reshape(-1, 3)} <= {(0, 0, 0), PERSON_COLOURS[0]}
    assert mask[:, :, 80:].any(-1).sum() == 0  # only the leftmost person is kept


def test_pose_mode_rejects_bad_settings_before_work(tmp_path):
    src = write_video(tmp_path / "d.mp4", np.zeros((2, 32, 32, 3), np.uint8), 8)
    with pytest.raises(InputError, match="not found"):
        prepare_driving(src, tmp_path / "o", driving="pose", weights=PoseWeights(nlf=tmp_path / "missing.ts"))
    with pytest.raises(InputError, match="align needs a reference"):
        prepare_driving(src, tmp_path / "o", PoseOptions(align=True), driving="pose", weights=PoseWeights())
    with pytest.raises(InputError, match="driving must be"):
        prepare_driving(src, tmp_path / "o", driving="skeleton")
    with pytest.raises(InputError, match="no person found"):
        prepare_driving(src, tmp_path / "o", driving="pose", weights=PoseWeights(), device="cpu")


def test_pose_mode_aligns_to_a_reference(tmp_path, astronaut):
    src = write_video(tmp_path / "drive.mp4", small_clip(astronaut, 2), 8)
    ref = tmp_path / "ref.png"
    big = np.zeros((224, 288, 3), np.uint8)
    big[:, 20:268] = cv2.resize(astronaut, (248, 248))[:224]  # the reference person larger than the driver
    cv2.imwrite(str(ref), big[..., ::-1])
    res = prepare_driving(
        src,
        tmp_path / "out",
        PoseOptions(align=True),
        driving="pose",
        weights=PoseWeights(),
        device="cpu",
        reference_image=ref,
    )
    al = res.alignment
    assert al is not None and al["m"] > 1.05


def test_cli_runs_and_reports_bad_input(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    src = write_video(tmp_path / "d.mp4", np.zeros((2, 32, 32, 3), np.uint8), 8)
    assert run(parser.parse_args([str(src), "--out", str(tmp_path / "o")])) == 0
    said = capsys.readouterr().out
    assert f"wrote {(tmp_path / 'o' / 'rendered_v2.mp4').resolve()}" in said
    assert "2 frames, 32x32 at 8 fps; end-to-end: the driving video copied as is" in said and "{" not in said
    assert run(parser.parse_args([str(src), "--out", str(tmp_path / "o"), "--json"])) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "copy"
    args = parser.parse_args(
        [
            str(src),
            "--out",
            str(tmp_path / "o"),
            "--driving",
            "pose",
            "--dwpose-det",
            str(tmp_path / "yolox_l.onnx"),
            "--dwpose-pose",
            str(tmp_path / "p.onnx"),
        ]
    )
    assert run(args) == 2
    assert "yolox_l.onnx" in capsys.readouterr().err


def test_pose_mode_keeps_odd_frame_sizes(tmp_path):
    h, w = 75, 121
    frames = np.stack([blob_image(h, w, [(40, 30)], sigma=2.5)] * 2)
    src = tmp_path / "odd.mkv"
    write_video(src, frames, 10, lossless=True)
    ratio = min(640 / h, 640 / w)
    det = build_yolox(tmp_path / "det.onnx", yolox_raw([((10, 5, 70, 70), 0.9)], ratio))
    res = prepare_driving(
        src,
        tmp_path / "out",
        driving="pose",
        device="cpu",
        weights=PoseWeights(dwpose_det=det, dwpose_pose=build_simcc(tmp_path / "p.onnx")),
    )
    video, _ = read_video(res.rendered)
    mask, _ = read_video(res.mask_render)
    assert video.shape == (2, h, w, 3) and mask.shape == (2, h, w, 3)
    assert res.rendered.name == "rendered_v2.mp4" and res.mask_render.name == "rendered_mask_v2.mp4"
