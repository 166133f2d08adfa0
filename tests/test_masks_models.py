"""masks/ backends: the embedded mediapipe default on a real photo, SAM 2 (bundled config, random weights, small
input) and scripted predictors with the SAM 2 / SAM 3 interfaces for the track bookkeeping."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from scailflow import masks
from scailflow.errors import InputError
from scailflow.masks import palette
from scailflow.masks.options import MaskOptions
from scailflow.masks.segmenters import MediapipeSegmenter, Sam2VideoSegmenter, Sam3VideoSegmenter, sam2_config_for
from scailflow.masks.stage import build_segmenter
from scailflow.masks.tracks import person_selector
from scailflow.media import probe_video, read_image, read_video, write_image, write_video

BLUE, RED = palette.PALETTE[0], palette.PALETTE[1]
ASTRONAUT = data.astronaut()


def hand_checked_person(h=512, w=512):
    """Her head and suit, boxed by eye on skimage's astronaut (512 x 512)."""
    region = np.zeros((512, 512), bool)
    region[15:190, 150:300] = True  # head and hair
    region[150:512, 20:365] = True  # suit and arms
    return cv2.resize(region.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


# ---------------------------------------------------------------- embedded default


def test_mediapipe_finds_the_astronaut():
    fg = MediapipeSegmenter().foreground(ASTRONAUT)
    assert iou(fg, hand_checked_person()) > 0.6
    core = np.zeros_like(fg)
    core[40:170, 175:280] = True  # face
    core[250:500, 60:280] = True  # chest and arm
    assert fg[core].mean() > 0.95
    background = np.zeros_like(fg)
    background[0:140, 0:140] = True  # flag
    background[0:280, 360:512] = True  # shuttle model and backdrop
    assert fg[background].mean() < 0.05
    ((x0, y0, x1, y1),) = MediapipeSegmenter().person_boxes(ASTRONAUT)
    assert x0 < 40 and 150 < (x0 + x1) / 2 < 330 and y0 < 40 and y1 > 480


def astronaut_inputs(tmp_path, n=5, size=128):
    small = cv2.resize(ASTRONAUT, (size, size), interpolation=cv2.INTER_AREA)
    ref = tmp_path / "ref.png"
    write_image(ref, small)
    frames = np.stack([np.roll(small, 2 * t, axis=1) for t in range(n)])
    video = tmp_path / "driving.mp4"
    write_video(video, frames, 10.0, lossless=True)
    return ref, video, small


def test_make_masks_auto_uses_mediapipe_and_covers_her(tmp_path, caplog):
    ref, video, small = astronaut_inputs(tmp_path)
    with caplog.at_level(logging.INFO, logger="scailflow.masks"):
        result = masks.make_masks(ref, video, tmp_path / "out")
    assert "no SAM 2 checkpoint" in caplog.text and result.backend == "mediapipe" and result.persons == 1
    drv, fps = read_video(result.driving_mask)
    assert drv.shape == (5, 128, 128, 3) and fps == 10.0
    person = hand_checked_person(128, 128)
    blue = (drv[0] == BLUE).all(-1)
    assert iou(blue, person) > 0.6
    assert ((drv[0] == BLUE).all(-1) | (drv[0] == 0).all(-1)).all()
    ref_mask = read_image(result.ref_mask)
    assert iou((ref_mask == BLUE).all(-1), person) > 0.6
    assert ((ref_mask == BLUE).all(-1) | (ref_mask == 255).all(-1)).all()
    assert probe_video(result.driving_mask).frames == 5


def test_no_person_in_a_blank_reference(tmp_path):
    _, video, _ = astronaut_inputs(tmp_path, n=1)
    blank = tmp_path / "blank.png"
    write_image(blank, np.full((96, 96, 3), 128, np.uint8))
    with pytest.raises(masks.NoPersonError, match="reference image"):
        masks.make_masks(blank, video, tmp_path / "out", MaskOptions(backend="mediapipe"))


def test_build_segmenter_choices(tmp_path):
    assert isinstance(build_segmenter("auto"), MediapipeSegmenter)
    with pytest.raises(InputError, match="needs a checkpoint"):
        build_segmenter("sam2")
    with pytest.raises(InputError, match="not found"):
        build_segmenter("sam2", sam2_checkpoint=tmp_path / "sam2.1_hiera_large.pt")
    with pytest.raises(InputError, match="sam3"):
        build_segmenter("sam3", sam3_checkpoint=tmp_path / "sam3.pt")
    with pytest.raises(InputError, match="unknown masks backend"):
        build_segmenter("sam9")
    assert sam2_config_for(Path("sam2.1_hiera_large.pt")) == "configs/sam2.1/sam2.1_hiera_l.yaml"
    assert sam2_config_for(Path("sam2_hiera_base_plus.pt")) == "configs/sam2/sam2_hiera_b+.yaml"
    assert sam2_config_for(Path("/x/sam2.1_hiera_tiny.pt")) == "configs/sam2.1/sam2.1_hiera_t.yaml"


# ---------------------------------------------------------------- SAM 2, real model with random weights


class Spy:
    """Wraps a SAM 2 video predictor and records what our code sends and what the predictor returns."""

    def __init__(self, inner):
        self.inner = inner
        self.image_size = inner.image_size
        self.boxes, self.outputs, self.resets = [], [], 0

    def init_state(self, path, **kw):
        self.frames_on_disk = sorted(Path(path).iterdir())
        return self.inner.init_state(path, **kw)

    def add_new_points_or_box(self, state, frame_idx, obj_id, box):
        self.boxes.append((obj_id, np.asarray(box, np.float32)))
        return self.inner.add_new_points_or_box(state, frame_idx=frame_idx, obj_id=obj_id, box=box)

    def reset_state(self, state):
        self.resets += 1
        return self.inner.reset_state(state)

    def propagate_in_video(self, state):
        for t, ids, logits in self.inner.propagate_in_video(state):
            self.outputs.append((t, list(ids), logits.detach().cpu().numpy().copy()))
            yield t, ids, logits


@pytest.fixture(scope="module")
def sam2_tiny():
    torch.manual_seed(0)
    return Sam2VideoSegmenter.from_checkpoint(None, "configs/sam2.1/sam2.1_hiera_t.yaml", "cpu", image_size=128)


@pytest.mark.integration  # the whole pipeline end to end: tens of seconds on 2 cores
def test_sam2_random_weights_outputs_flow_through_our_bookkeeping(sam2_tiny):
    spy = Spy(sam2_tiny.predictor)
    seg = Sam2VideoSegmenter(spy)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (4, 96, 160, 3), dtype=np.uint8)
    boxes = [(100, 10, 150, 90), (10, 20, 60, 80)]
    seen = []

    def keep_both_right_first(first):
        seen.extend(first)
        return [0, 1]

    out = seg.segment(frames, keep_both_right_first, boxes)
    assert out.count == 2 and out.candidates == 2 and out.labels.shape == (4, 96, 160) and out.labels.dtype == np.uint8
    assert len(spy.frames_on_disk) == 4 and spy.resets == 0
    assert [b[0] for b in spy.boxes] == [1, 2]
    np.testing.assert_allclose(spy.boxes[0][1], [100 * 128 / 160, 10 * 128 / 96, 150 * 128 / 160, 90 * 128 / 96])
    assert len(seen) == 2 and seen[0].shape == (96, 160)
    # our labels are exactly the predictor's logits resized to the frame, > 0.5 probability, most confident wins
    assert [t for t, _, _ in spy.outputs] == [0, 1, 2, 3]
    for t, ids, logits in spy.outputs:
        assert ids == [1, 2]
        up = np.stack([cv2.resize(lg[0], (160, 96), interpolation=cv2.INTER_LINEAR) for lg in logits])
        expected = np.where(up.max(0) > 0, up.argmax(0) + 1, 0)
        agree = (out.labels[t] == expected).mean()
        assert agree > 0.999  # float rounding right at logit 0 may flip a pixel


@pytest.mark.integration  # the whole pipeline end to end: tens of seconds on 2 cores
def test_sam2_random_weights_through_make_masks(tmp_path, sam2_tiny):
    ref, video, _ = astronaut_inputs(tmp_path, n=3, size=96)
    boxes = [(0.05, 0.05, 0.95, 1.0)]  # a pose detector's box as fractions of the frame
    # seeded random weights give a deterministic (meaningless) mask above 1% of the frame for this box
    result = masks.make_masks(
        ref, video, tmp_path / "out", segmenter=sam2_tiny, person_boxes=boxes, ref_person_boxes=[(5, 5, 90, 95)]
    )
    drv, _ = read_video(result.driving_mask)
    assert result.backend == "sam2" and drv.shape == (3, 96, 96, 3)
    assert {tuple(c) for c in np.unique(drv.reshape(-1, 3), axis=0)} <= {BLUE, (0, 0, 0)}


def counting(predictor):
    """The real SAM 2 predictor (shared weights) as a subclass that records how many frames each state loads."""

    class Counting(type(predictor)):
        def init_state(self, video_path, **kw):
            state = super().init_state(video_path, **kw)
            self.loaded.append(state["num_frames"])
            return state

    spy = copy.copy(predictor)
    spy.__class__ = Counting
    spy.loaded = []
    return spy


SAM2_BOX = [(0.05, 0.05, 0.95, 1.0)]  # seeded random weights keep a mask for this box through 10 shifted frames


def sam2_masks(tmp_path, name, predictor, window, n=10):
    ref, video, _ = astronaut_inputs(tmp_path, n=n, size=96)
    seg = Sam2VideoSegmenter(predictor, window=window)
    result = masks.make_masks(
        ref, video, tmp_path / name, segmenter=seg, person_boxes=SAM2_BOX, ref_person_boxes=[(5, 5, 90, 95)]
    )
    return result, read_video(result.driving_mask)[0], video


def test_sam2_clip_within_its_window_is_tracked_whole(tmp_path, sam2_tiny):
    pred = counting(sam2_tiny.predictor)
    result, drv, video = sam2_masks(tmp_path, "out", pred, window=6, n=6)
    assert pred.loaded == [1, 6]  # the reference, then the whole clip in one state
    # exactly what the predictor gives the whole clip, as before windows existed
    frames = read_video(video)[0]
    whole = Sam2VideoSegmenter(sam2_tiny.predictor).segment(frames, lambda first: [0], [(4.8, 4.8, 91.2, 96.0)])
    assert result.persons == 1 and result.colours == ["blue"]
    np.testing.assert_array_equal(np.where(whole.labels[..., None] == 1, BLUE, 0).astype(np.uint8), drv)


def test_sam2_long_clip_is_tracked_window_by_window(tmp_path, sam2_tiny, caplog):
    whole, drv_whole, _ = sam2_masks(tmp_path, "whole", sam2_tiny.predictor, window=128)
    pred = counting(sam2_tiny.predictor)
    with caplog.at_level(logging.INFO, logger="scailflow.masks"):
        result, drv, _ = sam2_masks(tmp_path, "windowed", pred, window=4)
    assert "SAM 2 tracks the 10 frames 4 at a time" in caplog.text
    # the reference, then windows of frames 0-3, 3-6, 6-9 (each opens on the previous one's last frame)
    assert pred.loaded == [1, 4, 4, 4]
    assert drv.shape == drv_whole.shape == (10, 96, 96, 3)
    assert (result.persons, result.colours) == (whole.persons, whole.colours) == (1, ["blue"])
    np.testing.assert_array_equal(drv[:4], drv_whole[:4])  # the first window is the whole clip's start
    # the person is carried across every window in her colour
    covered = [(f == BLUE).all(-1).mean() for f in drv]
    assert min(covered) > 0.3
    assert {tuple(c) for c in np.unique(drv.reshape(-1, 3), axis=0)} == {BLUE, (0, 0, 0)}
    later = [(a == BLUE).all(-1) for a in drv[4:]], [(b == BLUE).all(-1) for b in drv_whole[4:]]
    assert min((a & b).sum() / (a | b).sum() for a, b in zip(*later)) > 0.9  # and close to the whole clip's


def test_sam2_window_too_large_for_the_machine_is_refused(tmp_path, sam2_tiny, monkeypatch):
    monkeypatch.setattr("scailflow.masks.stage.decode_budget", lambda: 1 << 16)
    with pytest.raises(InputError, match=r"driving.mp4: one SAM 2 window of 4 frames of 96x96 needs"):
        sam2_masks(tmp_path, "out", sam2_tiny.predictor, window=4)


# ---------------------------------------------------------------- SAM 2 interface, scripted


class ScriptedSam2:
    """SAM 2 video predictor stand-in: object k's mask is its prompt box, moving right 2 model pixels a frame."""

    image_size = 64

    def __init__(self):
        self.calls = []

    def init_state(self, path, offload_video_to_cpu=False):
        files = sorted(Path(path).glob("*.jpg"), key=lambda p: int(p.stem))
        self.calls.append(("init", len(files), np.asarray(cv2.imread(str(files[0]))).shape))
        return {"n": len(files), "objs": {}}

    def _logits(self, box, shift=0):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        m = np.full((1, 64, 64), -10.0, np.float32)
        m[0, y0:y1, x0 + shift : x1 + shift] = 10.0
        return m

    def add_new_points_or_box(self, state, frame_idx, obj_id, box):
        self.calls.append(("add", obj_id, tuple(float(v) for v in box)))
        state["objs"][obj_id] = box
        ids = list(state["objs"])
        return frame_idx, ids, torch.from_numpy(np.stack([self._logits(state["objs"][i]) for i in ids]))

    def reset_state(self, state):
        self.calls.append(("reset",))
        state["objs"].clear()

    def propagate_in_video(self, state):
        ids = list(state["objs"])
        for t in range(state["n"]):
            yield t, ids, torch.from_numpy(np.stack([self._logits(state["objs"][i], 2 * t) for i in ids]))


def test_sam2_bookkeeping_filters_cuts_orders_and_tracks():
    pred = ScriptedSam2()
    seg = Sam2VideoSegmenter(pred)
    frames = np.zeros((3, 64, 64, 3), np.uint8)
    boxes = [
        (36, 4, 60, 60),  # big, right
        (4, 10, 20, 50),  # medium, left
        (28, 2, 31, 6),  # tiny: < 1 %
        (22, 40, 30, 50),
    ]  # small: cut by max_persons
    out = seg.segment(frames, person_selector(2), boxes)
    assert out.count == 2 and out.candidates == 4
    assert pred.calls[0] == ("init", 3, (64, 64, 3))
    adds = [c for c in pred.calls if c[0] == "add"]
    assert [a[1] for a in adds] == [1, 2, 3, 4, 2, 1]  # all prompted, reset, then only the kept (left first)
    assert ("reset",) in pred.calls
    lab = out.labels
    assert lab[0, 30, 10] == 1 and lab[0, 30, 45] == 2 and lab[0, 4, 29] == 0 and lab[0, 45, 25] == 0
    assert lab[2, 30, 22] == 1 and lab[2, 30, 6] == 0 and lab[0, 30, 6] == 1  # moved right 4 px by frame 2
    assert lab[2, 30, 63] == 2


def test_sam2_scripted_through_make_masks_with_pose_boxes(tmp_path):
    frames = np.zeros((4, 64, 128, 3), np.uint8)
    video = tmp_path / "driving.mp4"
    write_video(video, frames, 8.0, lossless=True)
    ref = tmp_path / "ref.png"
    write_image(ref, np.zeros((64, 64, 3), np.uint8))
    drv_boxes = [[80, 4, 120, 60, 0.9], [8, 10, 40, 56, 0.8]]  # (x0, y0, x1, y1, score) in pixels
    result = masks.make_masks(
        ref,
        video,
        tmp_path / "out",
        segmenter=Sam2VideoSegmenter(ScriptedSam2()),
        person_boxes=drv_boxes,
        ref_person_boxes=[[2, 2, 30, 60], [34, 2, 62, 60]],
    )
    drv, fps = read_video(result.driving_mask)
    assert result.persons == 2 and fps == 8.0 and drv.shape == (4, 64, 128, 3)
    assert tuple(drv[0, 30, 20]) == BLUE and tuple(drv[0, 30, 100]) == RED
    ref_mask = read_image(result.ref_mask)
    assert tuple(ref_mask[30, 10]) == BLUE and tuple(ref_mask[30, 50]) == RED


def test_sam2_prompt_boxes_come_from_mediapipe_without_pose_boxes(tmp_path):
    ref, video, small = astronaut_inputs(tmp_path, n=2, size=128)
    pred = ScriptedSam2()
    masks.make_masks(ref, video, tmp_path / "out", segmenter=Sam2VideoSegmenter(pred))
    adds = [c[2] for c in pred.calls if c[0] == "add"]
    assert len(adds) == 2  # one person in the reference, one in the driving video
    x0, y0, x1, y1 = (v * 128 / 64 for v in adds[1])  # back to frame pixels
    assert x0 < 15 and y0 < 15 and y1 > 115 and 40 < (x0 + x1) / 2 < 90


# ---------------------------------------------------------------- SAM 3 interface, scripted


class ScriptedSam3:
    """SAM 3 video-model stand-in: two people from frame 0 (one tiny), a newcomer from frame 1."""

    def __init__(self, h, w):
        self.h, self.w, self.calls = h, w, []

    def init_state(self, resource_path):
        self.calls.append("init_state")
        self.n = len(list(Path(resource_path).glob("*.jpg")))
        return {"n": self.n}

    def add_prompt(self, state, frame_idx, text_str):
        self.calls.append(("add_prompt", frame_idx, text_str))

    def propagate_in_video(self, state, start_frame_idx, max_frame_num_to_track, reverse):
        self.calls.append("propagate_in_video")
        for t in range(state["n"]):
            objs = {3: (4 + t, 4, 20 + t, 40), 7: (30, 2, 32, 4)}
            if t >= 1:
                objs[9] = (40, 10, 60, 40)
            ids = sorted(objs)
            m = np.zeros((len(ids), self.h, self.w), bool)
            for k, i in enumerate(ids):
                x0, y0, x1, y1 = objs[i]
                m[k, y0:y1, x0:x1] = True
            yield t, {"out_obj_ids": np.array(ids), "out_binary_masks": m}


def test_sam3_bookkeeping_drops_small_and_later_tracks():
    pred = ScriptedSam3(48, 64)
    out = Sam3VideoSegmenter(pred).segment(np.zeros((3, 48, 64, 3), np.uint8), person_selector(2))
    assert pred.calls == ["init_state", ("add_prompt", 0, "human"), "propagate_in_video"]
    assert out.count == 1 and out.candidates == 2
    assert out.labels[2, 20, 10] == 1 and out.labels[2, 20, 50] == 0 and out.labels[0, 3, 31] == 0
