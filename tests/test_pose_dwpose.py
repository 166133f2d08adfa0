"""DWPose pre/post-processing, run through onnxruntime on test-built models; weight configuration checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scailflow.errors import InputError
from scailflow.pose import PoseWeights
from scailflow.pose.dwpose import (
    DWPose,
    box_to_centre_scale,
    crop_affine,
    decode_simcc,
    letterbox,
    nms,
    select_persons,
    to_person,
    yolox_decode,
)
from tests.test_pose_fakes import blob_image, build_nlf, build_simcc, build_yolox, yolox_raw


def test_letterbox_resizes_keeping_aspect_and_pads_top_left_with_114():
    img = np.full((320, 480, 3), 7, np.uint8)
    chw, r = letterbox(img)
    assert chw.shape == (3, 640, 640) and chw.dtype == np.float32
    assert r == pytest.approx(640 / 480)
    assert np.all(chw[:, :426, :] == 7)  # int(320 * 1.333) = 426 rows of content
    assert np.all(chw[:, 427:, :] == 114)
    assert chw.max() == 114 and chw.min() == 7  # 0-255 values, no mean/std


def test_decode_then_nms_keeps_the_best_of_overlapping_person_boxes():
    ratio = 640 / 480
    raw = yolox_raw(
        [((100, 50, 260, 300), 0.9), ((104, 52, 262, 296), 0.8), ((300, 40, 420, 310), 0.6), ((10, 10, 60, 60), 0.2)],
        ratio,
    )
    boxes, scores = yolox_decode(raw, ratio)
    kept, kept_scores = select_persons(boxes, scores)
    assert kept_scores.tolist() == pytest.approx([0.9, 0.6])
    np.testing.assert_allclose(kept[0], [100, 50, 260, 300], atol=1e-3)
    np.testing.assert_allclose(kept[1], [300, 40, 420, 310], atol=1e-3)


def test_nms_uses_plus_one_areas():
    a = np.array([[0, 0, 9, 9], [5, 0, 14, 9]], np.float32)  # +1 areas: 100 each, overlap 5x10 = 50 -> IoU 1/3
    assert nms(a, np.array([0.9, 0.8]), 0.34).tolist() == [0, 1]
    assert nms(a, np.array([0.9, 0.8]), 0.33).tolist() == [0]


def test_box_padding_aspect_and_crop_affine_round_trip():
    centre, scale = box_to_centre_scale(np.array([100, 50, 260, 300]))
    np.testing.assert_allclose(centre, [180, 175])
    assert scale[0] / scale[1] == pytest.approx(0.75)
    assert scale[1] == pytest.approx(250 * 1.25)  # tall box: height padded, width grown
    m = crop_affine(centre, scale)
    np.testing.assert_allclose(m @ [180, 175, 1], [144, 192])
    pt = np.array([130.0, 90.0])
    crop_pt = m @ [*pt, 1]
    # SimCC locations are crop pixels x2; feed the exact crop point back through the decoder
    sx = np.zeros((1, 576), np.float32)
    sy = np.zeros((1, 768), np.float32)
    sx[0, int(round(crop_pt[0] * 2))] = 1
    sy[0, int(round(crop_pt[1] * 2))] = 1
    kp, score = decode_simcc(sx, sy, centre, scale)
    np.testing.assert_allclose(kp[0], pt, atol=scale[0] / 288)
    assert score[0] == 1


def test_simcc_decoding_argmax_split_and_confidence():
    sx = np.zeros((3, 576), np.float32)
    sy = np.zeros((3, 768), np.float32)
    sx[0, 100], sy[0, 300] = 0.9, 0.5  # score = min = 0.5
    sx[1, 10], sy[1, 20] = 0.7, 0.8  # score 0.7
    sx[2] -= 1.0  # score <= 0: location -1
    sy[2] -= 1.0
    centre, scale = np.array([144.0, 192.0], np.float32), np.array([288.0, 384.0], np.float32)
    kp, score = decode_simcc(sx, sy, centre, scale)  # identity crop
    np.testing.assert_allclose(kp[0], [50, 150])
    np.testing.assert_allclose(kp[1], [5, 10])
    np.testing.assert_allclose(kp[2], [-0.5, -0.5])
    np.testing.assert_allclose(score, [0.5, 0.7, -1.0])


def test_134_layout_neck_and_openpose_order():
    kps = np.zeros((133, 2), np.float32)
    scores = np.full(133, 0.9, np.float32)
    kps[5], kps[6] = (60, 40), (20, 40)  # COCO left / right shoulder
    kps[9], kps[10] = (70, 90), (10, 90)  # left / right wrist
    kps[91] = (75, 95)  # left hand root
    scores[112:133] = 0.1  # right hand not found
    p = to_person(kps, scores, 100, 100)
    np.testing.assert_allclose(p.body[1], [0.4, 0.4])  # neck = mid-shoulders
    assert p.body_score[1] == 1.0
    np.testing.assert_allclose(p.body[2], [0.2, 0.4])  # slot 2 = right shoulder
    np.testing.assert_allclose(p.body[7], [0.7, 0.9])  # slot 7 = left wrist
    np.testing.assert_allclose(p.hands[0, 0], [0.75, 0.95])
    assert np.all(p.hands[1] == -1)
    scores[5] = 0.2
    assert to_person(kps, scores, 100, 100).body_score[1] == 0.0


@pytest.mark.parametrize("dynamic", [False, True])
def test_dwpose_end_to_end_finds_the_spot_in_each_box(tmp_path, dynamic):
    h, w = 240, 400
    spots = [(90, 120), (300, 100)]
    frames = np.stack([blob_image(h, w, spots)] * 3)
    ratio = min(640 / h, 640 / w)
    det = build_yolox(
        tmp_path / "det.onnx",
        yolox_raw([((30, 20, 160, 230), 0.8), ((240, 10, 370, 220), 0.9)], ratio),
        dynamic_batch=dynamic,
    )
    pose = build_simcc(tmp_path / "pose.onnx")
    model = DWPose(det, pose, device="cpu")
    assert model.det_batch == (8 if dynamic else 1)
    people = model(frames)
    assert len(people) == 3 and all(len(p) == 2 for p in people)
    for frame_people in people:
        # detector score order: the right box (0.9) first
        for person, (sx, sy), box in zip(frame_people, spots[::-1], [(240, 10, 370, 220), (30, 20, 160, 230)]):
            _, scale = box_to_centre_scale(np.array(box))
            tol = 1.5 * scale[0] / 288 + 0.5
            np.testing.assert_allclose(person.body[0] * [w, h], [sx, sy], atol=tol)
            np.testing.assert_allclose(person.hands[1, 5] * [w, h], [sx, sy], atol=tol)
            np.testing.assert_allclose(person.box, box, atol=1e-3)


def test_dwpose_without_any_box_uses_the_whole_frame(tmp_path):
    det = build_yolox(tmp_path / "det.onnx", yolox_raw([], 1.0))
    model = DWPose(det, build_simcc(tmp_path / "pose.onnx"), device="cpu")
    frame = blob_image(120, 160, [(40, 60)])
    ((person,),) = model(frame[None])
    np.testing.assert_allclose(person.box, [0, 0, 160, 120])
    np.testing.assert_allclose(person.body[0] * [160, 120], [40, 60], atol=1.5)


def test_low_confidence_keypoints_become_missing(tmp_path):
    det = build_yolox(tmp_path / "det.onnx", yolox_raw([((10, 10, 100, 110), 0.9)], 640 / 120))
    model = DWPose(det, build_simcc(tmp_path / "pose.onnx", bias=-1e6), device="cpu")
    ((person,),) = model(blob_image(120, 120, [(50, 50)])[None])
    assert not person.visible().any()
    assert np.all(person.face == -1) and np.all(person.hands == -1)


# ------------------------------------------------------------------------------------------------ weights
def test_weights_from_env_and_backend_names(tmp_path):
    env = {
        "SCAILFLOW_DWPOSE_DET": str(tmp_path / "d.onnx"),
        "SCAILFLOW_DWPOSE_POSE": str(tmp_path / "p.onnx"),
        "SCAILFLOW_NLF": str(tmp_path / "n.ts"),
    }
    w = PoseWeights.from_env(env)
    assert w.dwpose_det == tmp_path / "d.onnx" and w.nlf == tmp_path / "n.ts"
    assert w.backend == "dwpose+nlf"
    assert PoseWeights.from_env({}).backend == "mediapipe"
    assert PoseWeights(dwpose_det=w.dwpose_det, dwpose_pose=w.dwpose_pose).backend == "dwpose-2d"
    assert PoseWeights(nlf=w.nlf).backend == "mediapipe+nlf"


def test_check_names_the_missing_file_and_its_place(tmp_path):
    missing = tmp_path / "nowhere" / "yolox_l.onnx"
    w = PoseWeights(dwpose_det=missing, dwpose_pose=build_simcc(tmp_path / "p.onnx"))
    with pytest.raises(InputError) as e:
        w.check()
    msg = str(e.value)
    assert str(missing) in msg and "pretrained_weights/DWPose/yolox_l.onnx" in msg and "SCAILFLOW_DWPOSE_DET" in msg
    with pytest.raises(InputError, match="dwpose_pose is not configured"):
        PoseWeights(dwpose_det=tmp_path / "p.onnx").check()


def test_check_rejects_stubs_wrong_shapes_pins_and_non_torchscript(tmp_path):
    stub = tmp_path / "yolox_l.onnx"
    stub.write_text("version https://git-lfs.github.com/spec/v1\n")
    pose = build_simcc(tmp_path / "p.onnx")
    with pytest.raises(InputError, match="LFS pointer"):
        PoseWeights(dwpose_det=stub, dwpose_pose=pose).check()
    det = build_yolox(tmp_path / "det.onnx", yolox_raw([], 1.0))
    PoseWeights(dwpose_det=det, dwpose_pose=pose).check()
    wrong = build_simcc(tmp_path / "wrong.onnx", input_shape=(1, 3, 256, 192))
    with pytest.raises(InputError, match=r"\[N, 3, 384, 288\]"):
        PoseWeights(dwpose_det=det, dwpose_pose=wrong).check()
    with pytest.raises(InputError, match=r"expected output \[N, anchors, 85\]"):
        PoseWeights(dwpose_det=pose, dwpose_pose=pose).check()
    with pytest.raises(InputError, match="sha256"):
        PoseWeights(dwpose_det=det, dwpose_pose=pose, dwpose_pose_sha256="0" * 64).check()
    not_ts = tmp_path / "nlf.torchscript"
    not_ts.write_bytes(b"x" * 4096)
    with pytest.raises(InputError, match="not a TorchScript archive"):
        PoseWeights(nlf=not_ts).check()
    PoseWeights(nlf=build_nlf(tmp_path / "nlf_ok.torchscript")).check()


def test_weights_from_yaml_relative_paths_and_override(tmp_path):
    (tmp_path / "pipelines.yaml").write_text("pose:\n  dwpose_det: w/yolox_l.onnx\n  nlf: /abs/nlf.ts\n")
    w = PoseWeights.from_yaml(tmp_path / "pipelines.yaml")
    assert w.dwpose_det == tmp_path / "w" / "yolox_l.onnx" and w.nlf.as_posix() == "/abs/nlf.ts"
    w2 = w.overridden_by(PoseWeights(nlf=tmp_path / "cli.ts"))
    assert w2.nlf == tmp_path / "cli.ts" and w2.dwpose_det == w.dwpose_det
    with pytest.raises(InputError, match="config file not found"):
        PoseWeights.from_yaml(tmp_path / "missing.yaml")
    (tmp_path / "batch.yaml").write_text("defaults:\n  driving: pose\n  pose: {nlf: n.ts, align: true}\n")
    assert PoseWeights.from_yaml(tmp_path / "batch.yaml").nlf == tmp_path / "n.ts"


def test_nlf_loader_rejects_scripts_without_detect_smpl_batched(tmp_path):
    import torch

    from scailflow.pose.nlf import NLF

    class NotNLF(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    torch.jit.script(NotNLF()).save(str(tmp_path / "other.torchscript"))
    with pytest.raises(InputError, match="no detect_smpl_batched"):
        NLF(tmp_path / "other.torchscript", torch.device("cpu"))
    model = NLF(build_nlf(tmp_path / "nlf.torchscript"), torch.device("cpu"))
    frames = np.stack([blob_image(60, 80, [(60, 30)]), np.zeros((60, 80, 3), np.uint8)])
    joints = model.joints(frames)
    assert joints.shape == (2, 18, 3) and np.all(joints[1] == 0)
    assert joints[0, 0, 2] == pytest.approx(3000) and joints[0, 2, 0] < joints[0, 5, 0]  # right shoulder at -x
    isolated = model.track_joints(frames, [np.array([0, 0, 10, 10], np.float32), None])
    assert np.all(isolated == 0)  # the spot lies outside the box: the isolated frame is black


@settings(max_examples=40, deadline=None)
@given(
    x1=st.floats(0, 300),
    y1=st.floats(0, 300),
    bw=st.floats(20, 400),
    bh=st.floats(20, 400),
    fx=st.floats(0.05, 0.95),
    fy=st.floats(0.05, 0.95),
)
def test_crop_affine_and_simcc_decode_invert_each_other(x1, y1, bw, bh, fx, fy):
    box = np.array([x1, y1, x1 + bw, y1 + bh])
    centre, scale = box_to_centre_scale(box)
    assert scale[0] >= bw * 1.25 - 1e-3 and scale[1] >= bh * 1.25 - 1e-3
    pt = np.array([x1 + fx * bw, y1 + fy * bh])
    cx, cy = crop_affine(centre, scale) @ [*pt, 1]
    assert 0 <= cx < 288 and 0 <= cy < 384  # a point of the box always lands in the crop
    sx = np.zeros((1, 576), np.float32)
    sy = np.zeros((1, 768), np.float32)
    sx[0, int(cx * 2)] = sy[0, int(cy * 2)] = 1
    kp, _ = decode_simcc(sx, sy, centre, scale)
    np.testing.assert_allclose(kp[0], pt, atol=float(scale[0]) / 576 + 1e-3)


def test_execution_providers_and_devices_follow_availability():
    import onnxruntime as ort
    import torch

    from scailflow.pose.runtime import onnx_providers, torch_device

    available = ort.get_available_providers()
    auto = onnx_providers("auto")
    assert auto[-1] == "CPUExecutionProvider" and all(p in available for p in auto)
    assert ("CUDAExecutionProvider" in auto) == ("CUDAExecutionProvider" in available)
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert torch_device("cpu").type == "cpu"
    assert torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="unknown device"):
        torch_device("tpu")
    if "CUDAExecutionProvider" not in available:
        with pytest.raises(InputError, match="CUDAExecutionProvider"):
            onnx_providers("cuda")


def test_a_gpu_host_without_onnxruntime_gpu_says_dwpose_runs_on_the_cpu(tmp_path, monkeypatch, caplog):
    import onnxruntime as ort
    import torch

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    det = build_yolox(tmp_path / "det.onnx", yolox_raw([], 1.0))
    pose = build_simcc(tmp_path / "pose.onnx")
    with caplog.at_level("INFO", logger="scailflow.pose"):
        DWPose(det, pose, device="auto")  # no GPU here: nothing to say
    assert "runs on the CPU" not in caplog.text
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU host with onnxruntime's CPU build
    caplog.clear()
    with caplog.at_level("INFO", logger="scailflow.pose"):
        model = DWPose(det, pose, device="auto")
        DWPose(det, pose, device="cpu")  # asked for the CPU: no warning
    warned = [r for r in caplog.records if "runs on the CPU" in r.getMessage()]
    assert model.providers == ["CPUExecutionProvider"] and len(warned) == 1
    assert "onnxruntime-gpu" in warned[0].getMessage() and warned[0].levelname == "WARNING"
