"""`scailflow run` on bad folders: one clear line, a non-zero exit, before any work; job.yaml errors name file:line."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from scailflow.files import write_text_atomic
from scailflow.media import write_image, write_video
from tests.support.processes import cli as run_cli
from tests.support.processes import one_error

pytestmark = pytest.mark.integration  # starts processes/servers/full flows

cli = functools.partial(run_cli, timeout=120)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "clip"
    d.mkdir()
    write_image(d / "ref.png", np.full((64, 64, 3), 128, np.uint8))
    write_video(d / "driving.mp4", np.zeros((5, 64, 64, 3), np.uint8), 16)
    return d


def test_no_video(folder):
    (folder / "driving.mp4").unlink()
    one_error(cli("run", folder, "--model", "tiny-random"), "no driving video")


def test_two_videos_no_driving(folder):
    (folder / "driving.mp4").rename(folder / "a.mp4")
    write_video(folder / "b.mp4", np.zeros((5, 64, 64, 3), np.uint8), 16)
    one_error(cli("run", folder), "name the driving video driving.mp4")


def test_unreadable_image(folder):
    (folder / "ref.png").write_bytes(b"not an image at all")
    one_error(cli("run", folder), "cannot read image")


def test_zero_frame_video(folder):
    (folder / "driving.mp4").write_bytes((folder / "driving.mp4").read_bytes()[:48])
    one_error(cli("run", folder), "driving.mp4")


def test_no_reference(folder):
    (folder / "ref.png").unlink()
    one_error(cli("run", folder), "no reference image")


def test_not_a_folder(tmp_path):
    one_error(cli("run", tmp_path / "nope"), "not a folder")


def test_job_yaml_error_names_file_line_key(folder):
    write_text_atomic(folder / "job.yaml", "mode: animation\nsampling:\n  steps: 4\n  target_h: 100\n")
    one_error(cli("run", folder), "job.yaml:4: sampling.target_h: must be a positive multiple of 32")


def test_job_yaml_unknown_key(folder):
    write_text_atomic(folder / "job.yaml", "mode: animation\nsamplng:\n  steps: 4\n")
    one_error(cli("run", folder), "job.yaml:2: samplng: unknown key")


def test_pipelines_yaml_error(tmp_path):
    p = tmp_path / "pipelines.yaml"
    write_text_atomic(p, "pipelines:\n  - name: a\n    root: /data\n    options:\n      mode: dance\n")
    one_error(cli("batch", p), "pipelines.yaml:5: pipelines.0.options.mode")
