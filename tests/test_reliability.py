"""Faults survived and bad input refused, each with what the user sees (the README's reliability table)."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from scailflow.errors import InputError, OutputError
from scailflow.files import write_text_atomic
from scailflow.flows.config import load_pipelines
from scailflow.flows.folder import scan_folder
from scailflow.flows.lock import LOCK_NAME, FolderBusy, folder_lock
from scailflow.media import probe_video, read_image, read_video, write_video
from tests.support.folders import make_folder
from tests.support.processes import Process, cli

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------------------------------------ faults
def test_full_disk_leaves_no_file_under_the_final_name(tmp_path):
    def frames():
        yield from np.zeros((2, 32, 32, 3), np.uint8)
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "out.mp4"
    with pytest.raises(OutputError, match="cannot write .*out.mp4: no space left on the device"):
        write_video(target, frames(), 16)
    assert list(tmp_path.iterdir()) == []


def test_second_run_of_a_folder_waits_or_skips(tmp_path):
    out = tmp_path / "out"
    order = []
    with folder_lock(out):
        with pytest.raises(FolderBusy, match="another run"):
            with folder_lock(out, wait=False):
                pass

        def second():
            with folder_lock(out):
                order.append("second")

        waiting = threading.Event()  # the second run says it waits for the busy folder: then the first finishes

        class Waiting(logging.Handler):
            def emit(self, record):
                if "is busy (another run); waiting for it" in record.getMessage():
                    waiting.set()

        log, handler = logging.getLogger("scailflow.flow"), Waiting()
        level = log.level
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        try:
            t = threading.Thread(target=second)
            t.start()
            assert waiting.wait(30), "the second run never waited"
        finally:
            log.removeHandler(handler)
            log.setLevel(level)
        order.append("first done")
    t.join(10)
    assert order == ["first done", "second"]


@pytest.mark.integration
@pytest.mark.usefixtures("report_to_shared_server")
def test_run_if_busy_skip_is_one_line(tmp_path):
    folder = make_folder(tmp_path, frames=5)
    out = folder / "scailflow"
    out.mkdir()
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process holds the folder
    try:
        r = cli("run", folder, "--model", "tiny-random", "--if-busy", "skip")
    finally:
        os.close(fd)
    assert r.returncode == 2 and "being processed by another run" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.usefixtures("report_to_shared_server")
def test_killed_run_resumes_from_cached_stages(tmp_path):
    folder = make_folder(tmp_path, frames=5)
    out = folder / "scailflow"
    env = dict(os.environ, SCAILFLOW_PROGRESS_INTERVAL="0")  # a line per step
    with Process(["run", folder, "--model", "tiny-random", "--steps", "1000"], env=env) as run:
        run.wait_for("1/1000 steps", 300)
        run.kill()  # the worker dies mid-generation
        run.proc.wait(30)
    assert not (out / "output.mp4").exists()
    r = cli("run", folder, "--model", "tiny-random")
    assert r.returncode == 0, r.stderr
    assert "generate Completed" in r.stdout and "pose Cached" in r.stdout and "masks Cached" in r.stdout
    assert probe_video(out / "output.mp4").frames == 5
    assert not list(out.rglob(".*.partial*"))


def test_gpu_out_of_memory_says_what_fits(tmp_path, monkeypatch, capsys):
    import torch

    from scailflow.cli import main
    from scailflow.scail import loading
    from tests.support.folders import official_args

    class OOMPipeline:
        label = "fake"

        def __call__(self, *a, **k):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    d = tmp_path
    from scailflow.media import write_image

    write_image(d / "ref.png", np.zeros((64, 64, 3), np.uint8))
    write_image(d / "ref_mask.png", np.full((64, 64, 3), 255, np.uint8))
    write_video(d / "rendered_v2.mp4", np.zeros((5, 64, 64, 3), np.uint8), 16)
    write_video(d / "rendered_mask_v2.mp4", np.zeros((5, 64, 64, 3), np.uint8), 16, lossless=True)
    monkeypatch.setattr(loading, "load_pipeline", lambda opts: OOMPipeline())
    (d / "scail2.safetensors").write_bytes(b"")  # the release's DiT is checked before the (faked) load
    code = main(
        ["generate", *map(str, official_args(d)), "--ckpt_dir", str(d), "--scail_path", str(d / "scail2.safetensors")]
    )
    err = capsys.readouterr().err
    assert code == 3 and "GPU out of memory" in err and "--offload block" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ bad input
def test_truncated_video_keeps_decodable_frames_or_fails_clearly(tmp_path):
    good = tmp_path / "good.mp4"
    write_video(good, np.random.default_rng(0).integers(0, 255, (30, 64, 64, 3), dtype=np.uint8), 16)
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) // 5, 40):
        bad = tmp_path / f"cut{cut}.mp4"
        bad.write_bytes(data[:cut])
        try:
            frames, _ = read_video(bad)
            assert 0 < len(frames) < 30
        except InputError as e:
            assert str(bad) in str(e)


def test_one_frame_and_zero_fps_and_odd_size(tmp_path):
    one = tmp_path / "one.mp4"
    write_video(one, np.zeros((1, 64, 64, 3), np.uint8), 16)
    frames, fps = read_video(one)
    assert frames.shape[0] == 1 and fps == 16
    odd = tmp_path / "odd.mp4"
    write_video(odd, np.zeros((3, 63, 47, 3), np.uint8), 16, lossless=True)  # masks keep odd sizes exactly
    assert read_video(odd)[0].shape == (3, 63, 47, 3)
    with pytest.raises(InputError, match="even sizes"):
        write_video(tmp_path / "odd420.mp4", np.zeros((3, 63, 47, 3), np.uint8), 16)


def test_variable_frame_rate_video(tmp_path):
    import av

    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        s.codec_context.time_base = __import__("fractions").Fraction(1, 1000)
        t = 0
        for i in range(12):
            f = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 20, np.uint8), format="rgb24")
            f.pts, f.time_base = t, __import__("fractions").Fraction(1, 1000)
            t += 20 if i % 2 else 60  # 50 fps and 16.7 fps alternating
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    frames, fps = read_video(path)
    assert len(frames) == 12 and fps > 0


def test_cmyk_and_16bit_images(tmp_path):
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    rgb = read_image(tmp_path / "cmyk.jpg")
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8 and rgb[..., 0].mean() > 200 and rgb[..., 1].mean() < 60
    Image.fromarray(np.full((20, 20), 65535, np.uint16)).save(tmp_path / "deep.png")
    deep = read_image(tmp_path / "deep.png")
    assert deep.shape == (20, 20, 3) and (deep == 255).all()


def test_off_palette_mask_pixels_are_snapped_and_counted():
    from scailflow.masks import snap_to_palette

    rgb = np.array([[[250, 10, 12], [240, 240, 240], [120, 130, 250], [0, 0, 0]]], np.uint8)
    snapped, changed = snap_to_palette(rgb)
    assert snapped.tolist() == [[[255, 0, 0], [255, 255, 255], [0, 0, 255], [0, 0, 0]]] and changed == 3


NAMES = st.sampled_from(
    [
        "ref.png",
        "ref.jpg",
        "ref.webp",
        "ref_bg.png",
        "ref_2.jpg",
        "driving.mp4",
        "a.mp4",
        "b.mov",
        "prompt.txt",
        "job.yaml",
        "notes.txt",
        "REF.PNG",
        ".ref.png",
    ]
)


@FAST
@given(files=st.dictionaries(NAMES, st.sampled_from(["image", "video", "garbage", "empty"]), max_size=6))
def test_fuzz_raw_folder_contract(tmp_path_factory, files):
    folder = tmp_path_factory.mktemp("fuzz")
    for name, kind in files.items():
        p = folder / name
        if kind == "image" and p.suffix.lower() in (".png", ".jpg", ".webp"):
            Image.new("RGB", (16, 16), (200, 10, 10)).save(p)
        elif kind == "video" and p.suffix.lower() in (".mp4", ".mov"):
            write_video(p, np.zeros((2, 16, 16, 3), np.uint8), 8)
        elif kind == "garbage":
            p.write_bytes(os.urandom(64))
        else:
            p.write_bytes(b"")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    try:
        raw = scan_folder(folder)
        assert raw.ref.is_file() and raw.driving.is_file()
    except InputError as e:
        assert "\n" not in str(e)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # inputs never touched


YAML_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 5000),
        st.text(max_size=8),
        st.sampled_from(["animation", "replacement", "0 2 * * *", "../x", "~/y"]),
    ),
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "root",
                    "folders",
                    "options",
                    "schedule",
                    "cron",
                    "mode",
                    "sampling",
                    "steps",
                    "target_h",
                    "pipelines",
                    "model",
                    "gpus",
                    "defaults",
                    "interval_seconds",
                    "zzz",
                ]
            ),
            c,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@FAST
@given(
    doc=st.dictionaries(st.sampled_from(["pipelines", "model", "gpus", "defaults", "extra"]), YAML_VALUES, max_size=4)
)
def test_fuzz_pipelines_yaml(tmp_path_factory, doc):
    import yaml

    path = tmp_path_factory.mktemp("yaml") / "pipelines.yaml"
    write_text_atomic(path, yaml.safe_dump(doc))
    try:
        load_pipelines(path)
    except InputError as e:
        assert str(path) in str(e) and "\n" not in str(e)


def test_paths_from_yaml_stay_under_the_output_root(tmp_path):
    from scailflow.flows.batch_flow import batch_folders

    (tmp_path / "elsewhere").mkdir()
    outside = make_folder(tmp_path / "elsewhere", "clip", frames=5)
    (tmp_path / "proj").mkdir()
    os.symlink(outside, tmp_path / "proj" / "link")
    write_text_atomic(
        tmp_path / "proj" / "pipelines.yaml",
        "pipelines:\n  - name: p\n    folders: [../elsewhere/clip, link]\n    out: results\n",
    )
    cfg = load_pipelines(tmp_path / "proj" / "pipelines.yaml")
    outs = [Path(o) for _, _, o, _ in batch_folders(cfg)]
    root = (tmp_path / "proj" / "results").resolve()
    assert all(o.resolve().parent == root for o in outs)


def test_ten_thousand_frame_video_is_planned_in_segments(tmp_path):
    from scailflow.scail.segments import output_frames, plan_segments

    path = tmp_path / "long.mp4"
    write_video(
        path,
        (np.arange(10_000, dtype=np.uint32)[:, None, None, None] % 251).astype(np.uint8)
        * np.ones((1, 16, 16, 3), np.uint8),
        25,
        crf=40,
    )
    info = probe_video(path)
    assert info.frames == 10_000 and abs(info.fps - 25) < 1e-6
    frames, _ = read_video(path)
    assert frames.shape == (10_000, 16, 16, 3)
    plan = plan_segments(info.frames, 81, 5)
    assert len(plan) == 131 and output_frames(plan) == 81 + 76 * 130  # the official plan drops the last 3 frames
    assert output_frames(plan_segments(info.frames, 81, 5, keep_tail=True)) == 10_000
