"""masks/: palette, track bookkeeping, colouring and writing, edits, preview, conformance with the model's reader.

People here are synthetic: each is a rectangle drawn in its own grey level, and `GreySegmenter` (our Segmenter
interface) finds them by that level, so every expected colour is known exactly.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from scailflow import masks
from scailflow.errors import InputError
from scailflow.masks import cli as masks_cli
from scailflow.masks import palette, tracks
from scailflow.masks.options import MaskOptions
from scailflow.masks.segmenters import Segmentation
from scailflow.media import probe_video, read_image, read_video, write_image, write_video
from scailflow.options import validated

BLUE, RED, GREEN, MAGENTA, CYAN, YELLOW = palette.PALETTE
BLACK, WHITE = palette.BLACK, palette.WHITE


class GreySegmenter:
    """Finds 'people' as pixels of one grey level; candidates are the levels present in frame 0, ascending."""

    name = "grey"

    def __init__(self):
        self.calls = []

    def segment(self, frames, select, boxes=None):
        self.calls.append(frames.shape)
        levels = [int(v) for v in np.unique(frames[0, ..., 0]) if v]
        first = [frames[0, ..., 0] == v for v in levels]
        kept = select(first)
        labels = np.zeros(frames.shape[:3], np.uint8)
        for p, i in enumerate(kept):
            labels[frames[..., 0] == levels[i]] = p + 1
        return Segmentation(labels, len(kept), len(levels))


def person_frame(h, w, people):
    """people: [(level, x0, y0, x1, y1)] (exclusive ends) on black."""
    img = np.zeros((h, w, 3), np.uint8)
    for level, x0, y0, x1, y1 in people:
        img[y0:y1, x0:x1] = level
    return img


def write_inputs(tmp_path, ref_people, drv_people_per_frame, size=(48, 80), ref_size=(60, 60), fps=12.5):
    ref = tmp_path / "in" / "ref.png"
    ref.parent.mkdir(parents=True, exist_ok=True)
    write_image(ref, person_frame(*ref_size, ref_people))
    frames = np.stack([person_frame(*size, p) for p in drv_people_per_frame])
    video = tmp_path / "in" / "driving.mp4"
    write_video(video, frames, fps, lossless=True)
    return ref, video


def colours_in(rgb):
    return {tuple(int(v) for v in c) for c in np.unique(rgb.reshape(-1, 3), axis=0)}


def assert_all_pure(rgb):
    assert colours_in(rgb) <= set(palette.ALLOWED_COLOURS)


# ---------------------------------------------------------------- palette


def test_palette_order_and_limit():
    assert palette.PALETTE == ((0, 0, 255), (255, 0, 0), (0, 255, 0), (255, 0, 255), (0, 255, 255), (255, 255, 0))
    assert palette.colour(0) == BLUE and palette.colour(5) == YELLOW
    with pytest.raises(masks.TooManyPersonsError, match="6 colours"):
        palette.colour(6)
    assert issubclass(masks.TooManyPersonsError, InputError) and issubclass(masks.NoPersonError, InputError)


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6), st.just(3))))
def test_snap_to_palette_is_pure_and_keeps_what_the_model_reads(rgb):
    snapped, n = masks.snap_to_palette(rgb)
    assert_all_pure(snapped)
    # the model's reader turns a channel on at >= 226; snapping must not change that reading
    np.testing.assert_array_equal(snapped == 255, rgb >= 226)
    assert n == int((snapped != rgb).any(-1).sum())
    again, n2 = masks.snap_to_palette(snapped)
    assert n2 == 0 and (again == snapped).all()


def test_snap_counts_jpeg_bleed_and_nearest_option():
    rgb = np.array([[[255, 0, 0], [250, 3, 8], [200, 200, 200], [0, 255, 255]]], np.uint8)
    snapped, n = masks.snap_to_palette(rgb)
    assert n == 2
    assert [tuple(p) for p in snapped[0]] == [RED, RED, BLACK, CYAN]
    nearest, _ = masks.snap_to_palette(rgb, threshold=128)
    assert tuple(nearest[0, 2]) == WHITE


# ---------------------------------------------------------------- tracks


def box_mask(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_select_tracks_drops_small_orders_by_area_and_cuts():
    h, w = 100, 100
    masks_ = [
        box_mask(h, w, 0, 0, 10, 9),  # 0.9 %: dropped
        box_mask(h, w, 50, 0, 60, 10),  # 1.0 %: kept (>= 1 %)
        box_mask(h, w, 0, 20, 40, 60),  # 16 %
        box_mask(h, w, 60, 60, 90, 90),
    ]  # 9 %
    assert tracks.select_tracks(masks_, 5) == [2, 3, 1]
    assert tracks.select_tracks(masks_, 2) == [2, 3]
    # selector: the same people, left to right by bounding-box x-centre
    assert tracks.person_selector(3)(masks_) == [2, 1, 3]


def test_match_by_centroid_is_greedy_on_normalised_positions():
    ref = [box_mask(50, 50, 35, 10, 45, 40)]  # right side of a square reference
    drv = [box_mask(90, 160, 10, 10, 30, 80), box_mask(90, 160, 70, 10, 90, 80), box_mask(90, 160, 120, 10, 150, 80)]
    assert tracks.match_by_centroid(ref, drv) == {0: 2}
    ref2 = [box_mask(50, 50, 0, 10, 10, 40), box_mask(50, 50, 20, 10, 30, 40)]
    assert tracks.match_by_centroid(ref2, drv) == {0: 0, 1: 1}


def test_best_iou_resizes_the_reference_mask():
    ref = box_mask(40, 40, 20, 0, 40, 40)  # right half
    cand = [box_mask(80, 120, 0, 0, 60, 80), box_mask(80, 120, 60, 0, 120, 80)]
    assert tracks.best_iou(ref, cand) == 1


def test_compose_labels_and_dilate():
    scores = np.zeros((2, 4, 4), np.float32)
    scores[0, :, :2] = 0.9
    scores[1, :, 1:] = 0.7
    lab = tracks.compose_labels(scores)
    assert lab[:, 0].tolist() == [1] * 4 and lab[:, 1].tolist() == [1] * 4 and lab[:, 3].tolist() == [2] * 4
    single = np.zeros((20, 20), np.uint8)
    single[8:12, 8:12] = 1
    grown = tracks.dilate(single, 2)
    assert grown.sum() > single.sum() and grown[8:12, 8:12].all() and grown[6, 10] == 1 and grown[0, 0] == 0


# ---------------------------------------------------------------- colours through make_masks


def run_masks(tmp_path, ref_people, drv_frames, opts=None, **kw):
    """make_masks on drawn people; keywords naming MaskOptions fields become the options."""
    ref, video = write_inputs(
        tmp_path, ref_people, drv_frames, **{k: kw.pop(k) for k in ("size", "ref_size", "fps") if k in kw}
    )
    seg = GreySegmenter()
    opts = opts or MaskOptions(**{k: kw.pop(k) for k in list(kw) if k in MaskOptions.model_fields})
    result = masks.make_masks(ref, video, tmp_path / "out", opts, segmenter=seg, **kw)
    ref_mask = read_image(result.ref_mask)
    drv_mask, fps = read_video(result.driving_mask)
    return result, ref_mask, drv_mask, fps, video


def test_two_people_get_palette_left_to_right_in_ref_and_driving(tmp_path):
    # driving: the larger person is on the RIGHT, so area order and left-to-right order differ
    frames = [[(60, 50, 5, 75, 45), (120, 5, 10, 20, 40)], [(60, 48, 5, 73, 45), (120, 8, 10, 23, 40)]]
    ref_people = [(60, 35, 5, 55, 55), (120, 5, 5, 25, 55)]
    result, ref_mask, drv, fps, video = run_masks(tmp_path, ref_people, frames)
    assert result.persons == 2 and result.colours == ["blue", "red"] and result.backend == "grey"
    assert result.ref_mask.name == "ref_mask.png" and result.driving_mask.name == "rendered_mask_v2.mp4"
    # driving: left person (level 120) blue, right (level 60) red, background black
    assert tuple(drv[0, 20, 10]) == BLUE and tuple(drv[0, 20, 60]) == RED and tuple(drv[0, 2, 40]) == BLACK
    assert tuple(drv[1, 20, 21]) == BLUE and tuple(drv[1, 20, 49]) == RED  # follows the motion
    # reference: left person blue, right red, background white
    assert tuple(ref_mask[30, 10]) == BLUE and tuple(ref_mask[30, 45]) == RED and tuple(ref_mask[2, 30]) == WHITE
    assert_all_pure(ref_mask) and assert_all_pure(drv)
    assert colours_in(drv) == {BLUE, RED, BLACK} and colours_in(ref_mask) == {BLUE, RED, WHITE}
    info, src = probe_video(result.driving_mask), probe_video(video)
    assert (info.frames, info.width, info.height) == (src.frames, src.width, src.height) and fps == 12.5
    assert result.to_dict()["driving_mask"] == str(result.driving_mask)


def test_three_people_in_order_blue_red_green(tmp_path):
    frames = [[(30, 55, 5, 75, 45), (90, 2, 20, 12, 40), (150, 25, 5, 45, 45)]] * 3
    ref_people = [(30, 2, 5, 17, 55), (90, 22, 30, 37, 55), (150, 42, 5, 57, 55)]
    result, ref_mask, drv, _, _ = run_masks(tmp_path, ref_people, frames, max_persons=3)
    assert result.persons == 3 and result.colours == ["blue", "red", "green"]
    assert [tuple(drv[2, 30, x]) for x in (5, 35, 65)] == [BLUE, RED, GREEN]
    assert [tuple(ref_mask[40, x]) for x in (8, 30, 50)] == [BLUE, RED, GREEN]
    assert drv.shape == (3, 48, 80, 3)


def test_max_persons_keeps_the_largest(tmp_path):
    frames = [[(30, 55, 5, 75, 45), (90, 2, 20, 12, 40), (150, 25, 5, 45, 45)]]
    ref_people = [(30, 2, 5, 17, 55), (150, 42, 5, 57, 55)]
    result, ref_mask, drv, _, _ = run_masks(tmp_path, ref_people, frames)  # default max_persons=2
    assert result.persons == 2
    assert tuple(drv[0, 30, 5]) == BLACK  # the smallest (level 90) is not tracked
    assert tuple(drv[0, 30, 35]) == BLUE and tuple(drv[0, 30, 65]) == RED


def test_fewer_reference_people_are_matched_by_centroid(tmp_path):
    frames = [[(30, 2, 5, 22, 45), (90, 30, 5, 50, 45), (150, 58, 5, 78, 45)]] * 2
    # one reference person on the right: matched to the rightmost track, which becomes the only coloured one
    result, ref_mask, drv, _, _ = run_masks(tmp_path, [(30, 40, 5, 58, 55)], frames, max_persons=3)
    assert result.persons == 1 and result.colours == ["blue"]
    assert tuple(drv[0, 20, 68]) == BLUE and tuple(drv[0, 20, 10]) == BLACK and tuple(drv[0, 20, 40]) == BLACK
    assert tuple(ref_mask[30, 50]) == BLUE
    # two reference people at left and right: the middle track is dropped; colours stay left to right
    shutil.rmtree(tmp_path / "out")
    result, ref_mask, drv, _, _ = run_masks(tmp_path, [(30, 2, 5, 15, 55), (90, 45, 5, 58, 55)], frames, max_persons=3)
    assert result.persons == 2
    assert [tuple(drv[1, 20, x]) for x in (10, 40, 68)] == [BLUE, BLACK, RED]
    assert tuple(ref_mask[30, 8]) == BLUE and tuple(ref_mask[30, 50]) == RED


def test_replacement_backgrounds_are_the_opposite_and_match_nearest(tmp_path):
    frames = [[(60, 5, 5, 30, 45), (120, 50, 5, 75, 45)]] * 2
    ref_people = [(200, 35, 5, 58, 58)]  # on the right of the reference: overlaps the right person best
    anim, a_ref, a_drv, _, _ = run_masks(tmp_path / "a", ref_people, frames)
    rep, r_ref, r_drv, _, _ = run_masks(tmp_path / "r", ref_people, frames, mode="replacement")
    assert rep.driving_mask.name == "replace_mask.mp4" and rep.persons == 1 and rep.mode == "replacement"
    # backgrounds swap: reference white -> black, driving black -> white
    assert tuple(a_ref[2, 2]) == WHITE and tuple(r_ref[2, 2]) == BLACK
    assert tuple(a_drv[0, 46, 40]) == BLACK and tuple(r_drv[0, 46, 40]) == WHITE
    assert tuple(r_ref[30, 45]) == BLUE
    # the right person is replaced; the left one is background (white)
    assert tuple(r_drv[0, 20, 60]) == BLUE and tuple(r_drv[0, 20, 15]) == WHITE
    assert colours_in(r_drv) == {BLUE, WHITE} and colours_in(r_ref) == {BLUE, BLACK}
    # an explicit index wins over IoU; dilation grows the region by the given pixels
    idx, _, i_drv, _, _ = run_masks(
        tmp_path / "i", ref_people, frames, mode="replacement", replace_index=0, dilate_px=2
    )
    assert tuple(i_drv[0, 20, 15]) == BLUE and tuple(i_drv[0, 20, 60]) == WHITE
    assert tuple(i_drv[0, 20, 31]) == BLUE and tuple(i_drv[0, 20, 33]) == WHITE  # 2 px beyond x=29
    assert_all_pure(i_drv)
    with pytest.raises(InputError, match="replace_index 2"):  # the options allow it (3 tracked), the video has 2
        run_masks(tmp_path / "bad", ref_people, frames, mode="replacement", replace_index=2, max_persons=3)
    with pytest.raises(InputError, match="replace_index 2"):  # the options alone refuse it (2 tracked)
        validated(MaskOptions, {"replace_index": 2})


def test_errors_name_the_file(tmp_path):
    frames = [[(60, 5, 5, 30, 45)]]
    with pytest.raises(masks.NoPersonError, match=r"no person found in the reference image .*ref\.png"):
        run_masks(tmp_path / "a", [], frames)
    with pytest.raises(masks.NoPersonError, match=r"no person found in the driving video .*driving\.mp4"):
        run_masks(tmp_path / "b", [(60, 5, 5, 30, 45)], [[]])
    seven = [[(20 + 20 * i, 2 + 11 * i, 5, 11 + 11 * i, 45) for i in range(7)]]
    ref7 = [(20 + 20 * i, 1 + 8 * i, 5, 8 + 8 * i, 55) for i in range(7)]
    with pytest.raises(InputError, match="max-persons: .* 6"):  # the options refuse more people than colours
        validated(MaskOptions, {"max_persons": 7})
    with pytest.raises(masks.TooManyPersonsError) as e:  # and the library, given options made without checks
        run_masks(tmp_path / "c", ref7, seven, MaskOptions.model_construct(max_persons=7))
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="mode"):
        run_masks(tmp_path / "d", [(60, 5, 5, 30, 45)], frames, mode="pose")


def test_extra_references(tmp_path):
    frames = [[(60, 5, 5, 30, 45), (120, 50, 5, 75, 45)]]
    bg = np.full((40, 50, 4), 180, np.uint8)
    bg[:, :10, 3] = 0  # transparent left strip: not part of the background picture
    Image.fromarray(bg, "RGBA").save(tmp_path / "bg.png")
    boxed = np.full((40, 50, 3), 120, np.uint8)
    boxed[:6] = 0
    boxed[-6:] = 0  # letterbox bars
    write_image(tmp_path / "letterbox.png", boxed)
    write_image(tmp_path / "view.png", person_frame(40, 50, [(90, 10, 5, 30, 35)]))
    extras = [
        (tmp_path / "bg.png", "background"),
        (tmp_path / "letterbox.png", "background"),
        (tmp_path / "view.png", "character:1"),
    ]
    result, *_ = run_masks(tmp_path, [(60, 5, 5, 25, 55), (120, 35, 5, 55, 55)], frames, extra_refs=extras)
    assert [p.name for p in result.extra_ref_masks] == [
        "extra_ref_mask_0.png",
        "extra_ref_mask_1.png",
        "extra_ref_mask_2.png",
    ]
    a, b, c = (read_image(p) for p in result.extra_ref_masks)
    assert (a[:, :10] == 0).all() and (a[:, 10:] == 255).all()
    assert (b[:6] == 0).all() and (b[-6:] == 0).all() and (b[6:-6] == 255).all()
    assert tuple(c[20, 20]) == RED and tuple(c[2, 2]) == BLACK and colours_in(c) == {RED, BLACK}
    with pytest.raises(InputError, match="character:2"):
        run_masks(tmp_path / "x", [(60, 5, 5, 25, 55)], frames, extra_refs=[(tmp_path / "view.png", "character:2")])


# ---------------------------------------------------------------- edits


def test_read_mask_video_applies_frame_overrides_and_snaps(tmp_path, caplog):
    frames = np.zeros((5, 32, 40, 3), np.uint8)
    frames[:, 8:24, 8:20] = BLUE
    video = masks.write_mask_video(tmp_path / "rendered_mask_v2.mp4", frames, 16)
    digest = masks.mask_digest(video)
    assert (masks.read_mask_video(video) == frames).all()
    edited = np.zeros((32, 40, 3), np.uint8)
    edited[8:24, 20:36] = RED
    folder = masks.override_dir(video)
    folder.mkdir()
    Image.fromarray(edited).save(folder / "00003.jpg", quality=80)  # a lossy edit
    assert masks.mask_digest(video) != digest
    assert masks.mask_sources(video) == [video, folder / "00003.jpg"]
    with caplog.at_level(logging.WARNING, logger="scailflow.masks"):
        out = masks.read_mask_video(video)
    assert_all_pure(out)
    assert tuple(out[3, 16, 28]) == RED and tuple(out[3, 16, 12]) == BLACK and tuple(out[2, 16, 12]) == BLUE
    assert "snapped" in caplog.text
    Image.fromarray(edited).save(folder / "7.png")
    with pytest.raises(InputError, match="frame 7"):
        masks.read_mask_video(video)


def test_writers_snap_impure_input(tmp_path):
    rgb = np.full((8, 8, 3), 240, np.uint8)
    rgb[:4] = (10, 20, 250)
    path = masks.write_mask_image(tmp_path / "m.png", rgb)
    back = read_image(path)
    assert colours_in(back) == {WHITE, BLUE}
    with pytest.raises(ValueError):
        masks.write_mask_image(tmp_path / "m.jpg", rgb)


# ---------------------------------------------------------------- conformance with the model's mask reader

CONFORMANCE = Path("/work/shared/conformance/mask_case.safetensors")


def test_conformance_mask_case_through_writer_reader_and_compression(tmp_path):
    import torch
    from safetensors.numpy import load_file

    from scailflow.scail.conditioning import masks_to_28ch

    case = load_file(str(CONFORMANCE))
    raw = case["video9_64x64.in_uint8_thwc"]
    expected = torch.from_numpy(case["video9_64x64.out"])
    path = masks.write_mask_video(tmp_path / "rendered_mask_v2.mp4", raw, 16)
    back = masks.read_mask_video(path)
    assert back.shape == raw.shape
    assert_all_pure(back)
    ours = masks_to_28ch(back)
    assert ours.shape == (28, 3, 8, 8)
    assert torch.equal(ours, masks_to_28ch(raw))
    assert torch.equal(ours, expected)


# ---------------------------------------------------------------- preview and CLI


def test_preview_sheet_video_and_cli(tmp_path, capsys):
    frames = [[(60, 5, 5, 30, 45), (120, 50, 5, 75, 45)]] * 4
    result, *_ = run_masks(tmp_path, [(60, 5, 5, 25, 55), (120, 35, 5, 55, 55)], frames)
    folder = tmp_path / "in"
    shutil.move(str(tmp_path / "out"), folder / "prepared")
    sheet_path = masks.preview(folder, tmp_path / "sheet.png", video_out=tmp_path / "overlay.mp4", frames=3, tile=96)
    sheet = read_image(sheet_path)
    # wide: a column per picture (the 60x60 reference, then 3 frames of 80x48), rows picture / mask / overlay;
    # tiles 96 px on their shorter side, 4 px apart
    assert sheet.shape[:2] == (3 * 96, 96 + 3 * 160 + 3 * 4)
    # the first frame's mask tile shows the left person in blue, in pure palette colours
    mask_cell = sheet[96:192, 100:260]
    assert (mask_cell == BLUE).all(-1).sum() > 100
    info = probe_video(tmp_path / "overlay.mp4")
    assert info.frames == 4 and info.width == 160
    parser = argparse.ArgumentParser()
    masks_cli.add_arguments(parser)
    args = parser.parse_args(["preview", str(folder), "--out", str(tmp_path / "cli.png")])
    assert masks_cli.run(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli.png")
    assert (tmp_path / "cli.png").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no masks found"):
        masks.preview(empty)
