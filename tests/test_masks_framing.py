"""Reference framing in replacement mode (warn, and `fit_reference: true` scales the reference and its mask) and a
PNG's own alpha as the reference mask."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from scailflow import masks
from scailflow.files import write_text_atomic
from scailflow.masks.framing import box, framing
from scailflow.masks.options import MaskOptions
from scailflow.masks.segmenters import MediapipeSegmenter
from scailflow.media import read_image, read_video, write_image, write_video
from tests.support.processes import cli

BLUE = masks.PALETTE[0]


@pytest.fixture(scope="module")
def photo():
    return data.astronaut()


def small_person_clip(photo, frames=3, size=192):
    """The astronaut at 45% of the frame height, standing in a grey room: the person to replace is small."""
    person = cv2.resize(photo, (int(size * 0.45), int(size * 0.45)), interpolation=cv2.INTER_AREA)
    out = []
    for t in range(frames):
        canvas = np.full((size, size, 3), 120, np.uint8)
        y0, x0 = size - person.shape[0], size // 3 + 2 * t
        canvas[y0:, x0 : x0 + person.shape[1]] = person
        out.append(canvas)
    return np.stack(out)


def test_full_bleed_reference_is_flagged_and_fitted(tmp_path, photo, caplog):
    ref = cv2.resize(photo, (192, 192), interpolation=cv2.INTER_AREA)  # she fills the frame
    write_image(tmp_path / "ref.png", ref)
    write_video(tmp_path / "driving.mp4", small_person_clip(photo), 8.0, lossless=True)
    with caplog.at_level(logging.WARNING, logger="scailflow.masks"):
        plain = masks.make_masks(tmp_path / "ref.png", tmp_path / "driving.mp4", tmp_path / "a", mode="replacement")
    assert plain.framing["ratio"] > 1.8 and plain.ref_image is None
    assert "as tall as the person replaced" in caplog.text and "fit_reference" in caplog.text

    fitted = masks.make_masks(
        tmp_path / "ref.png",
        tmp_path / "driving.mp4",
        tmp_path / "b",
        MaskOptions(fit_reference=True),
        mode="replacement",
    )
    assert fitted.ref_image.name == "ref_fitted.png" and fitted.framing["fitted"]
    image, mask = read_image(fitted.ref_image), read_image(fitted.ref_mask)
    assert image.shape == ref.shape and mask.shape == ref.shape
    person = (mask == BLUE).all(-1)
    drv, _ = read_video(fitted.driving_mask)
    after = framing(person, (drv[0] == BLUE).all(-1))
    assert after["ratio"] == pytest.approx(1.0, abs=0.1)  # the sizes now match
    # the mask moved with the pixels: the segmenter finds her where the mask says she is
    found = MediapipeSegmenter().foreground(image)
    assert (found & person).sum() / found.sum() > 0.9
    assert (image[~cv2.dilate(found.astype(np.uint8), np.ones((9, 9))).astype(bool)] > 200).mean() > 0.5  # white pad


@pytest.mark.integration
def test_fit_reference_reaches_generation_in_a_run(tmp_path, photo, shared_server):
    folder = tmp_path / "swap"
    folder.mkdir()
    write_image(folder / "ref.png", cv2.resize(photo, (128, 128), interpolation=cv2.INTER_AREA))
    write_video(folder / "driving.mp4", small_person_clip(photo, 5, 128), 16.0)
    write_text_atomic(
        folder / "job.yaml",
        "mode: replacement\nmasks:\n  fit_reference: true\nsampling:\n  steps: 1\n  target_h: 64\n  target_w: 64\n",
    )
    r = cli("run", folder, "--model", "tiny-random", timeout=900, env=shared_server[1])  # no temporary API
    assert r.returncode == 0, r.stderr
    record = json.loads((folder / "scailflow" / "output.mp4.json").read_text())
    assert record["inputs"]["image"].endswith("ref_fitted.png")


def test_png_alpha_is_the_reference_mask(tmp_path, photo):
    small = cv2.resize(photo, (128, 128), interpolation=cv2.INTER_AREA)
    alpha = np.zeros((128, 128), np.uint8)
    alpha[10:120, 30:90] = 255  # the user's cut-out: not what a segmenter would draw
    Image.fromarray(np.dstack([small, alpha])).save(tmp_path / "ref.png")
    write_video(tmp_path / "driving.mp4", np.stack([small] * 3), 8.0, lossless=True)
    result = masks.make_masks(tmp_path / "ref.png", tmp_path / "driving.mp4", tmp_path / "out")
    ref_mask = read_image(result.ref_mask)
    assert np.array_equal((ref_mask == BLUE).all(-1), alpha > 127)
    assert box(alpha > 127) == (30, 10, 89, 119)
    assert np.array_equal(read_image(tmp_path / "ref.png")[0, 0], [255, 255, 255])  # pixels: alpha on white, as before
