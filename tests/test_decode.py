"""The video decoder on real files written by imageio-ffmpeg's ffmpeg: phone rotations, HDR, VFR and frame rates."""

from __future__ import annotations

import subprocess

import av
import imageio_ffmpeg
import numpy as np
import pytest

from scailflow.decode import StreamedFrames, open_video, probe_video, read_video
from scailflow.media import write_video

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
H, W = 48, 64


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-y", "-v", "error", *args], check=True)


def upright_picture() -> np.ndarray:
    """An asymmetric picture: red grows to the right, green downwards, a white block top-left."""
    y, x = np.mgrid[0:H, 0:W]
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = x * 255 // (W - 1)
    img[..., 1] = y * 255 // (H - 1)
    img[..., 2] = 60
    img[:16, :16] = 255
    return img


def raw_clip(tmp_path, name: str, rgb: np.ndarray, frames: int = 3, *encode: str) -> str:
    raw = tmp_path / f"{name}.rgb"
    np.ascontiguousarray(rgb).tofile(raw)
    out = tmp_path / f"{name}_stored.mp4"
    h, w = rgb.shape[:2]
    ffmpeg(
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "10", "-stream_loop", str(frames - 1),
        "-i", str(raw), "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", *encode, str(out),
    )  # fmt: skip
    return str(out)


# a phone stores the picture sideways and says in the display matrix how to turn it: (pixels as stored, the flags)
TURNS = {
    "90": (lambda img: np.rot90(img, -1), ["-display_rotation", "90"]),
    "180": (lambda img: np.rot90(img, 2), ["-display_rotation", "180"]),
    "270": (lambda img: np.rot90(img, 1), ["-display_rotation", "270"]),
    "mirrored": (lambda img: img[:, ::-1], ["-display_hflip"]),
    "90-mirrored": (lambda img: np.rot90(img[:, ::-1], -1), ["-display_rotation", "90", "-display_hflip"]),
}


@pytest.mark.parametrize("turn", list(TURNS))
def test_a_phone_clip_decodes_upright(tmp_path, turn):
    store, flags = TURNS[turn]
    up = upright_picture()
    stored = raw_clip(tmp_path, "s", store(up))
    clip = tmp_path / "phone.mp4"
    ffmpeg(*flags, "-i", stored, "-c", "copy", str(clip))  # a display matrix, as phones write it
    frames, fps = read_video(clip)
    assert frames.shape == (3, H, W, 3) and fps == 10
    assert np.abs(frames[0].astype(int) - up).max() <= 3  # x264 lossless in YUV: rounding only
    # what ffmpeg's own player path (autorotate) shows
    shown = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(clip), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    assert np.array_equal(frames[0], np.frombuffer(shown, np.uint8).reshape(H, W, 3))
    info = probe_video(clip)
    assert (info.width, info.height) == (W, H)
    # streamed and resized to the upright size asked for
    small = list(open_video(clip, size=(24, 32)))
    assert len(small) == 3 and small[0].shape == (24, 32, 3)


def test_the_legacy_rotate_tag_is_applied(tmp_path):
    up = upright_picture()
    stored = raw_clip(tmp_path, "s", np.rot90(up, 1))  # stored turned counter-clockwise: shown turned clockwise, 90
    clip = tmp_path / "old.mkv"
    ffmpeg("-i", stored, "-c", "copy", "-metadata:s:v:0", "rotate=90", str(clip))
    with av.open(str(clip)) as c:
        assert {k.lower(): v for k, v in c.streams.video[0].metadata.items()}["rotate"] == "90"
        kinds = {getattr(item, "type", item).name for item in next(c.decode(video=0)).side_data}  # any PyAV 18.1.x
        assert "DISPLAYMATRIX" not in kinds
    frames, _ = read_video(clip)
    assert np.abs(frames[0].astype(int) - up).max() <= 3


def hdr_clip(tmp_path, trc: str) -> str:
    """A 10-bit HEVC clip tagged BT.2020 with the given transfer, from a smooth 16-bit picture."""
    h, w = 64, 96
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 65535 // (w - 1), y * 65535 // (h - 1), (x + y) * 65535 // (w + h - 2)], -1)
    raw = tmp_path / "hdr.rgb48"
    img.astype("<u2").tofile(raw)
    out = tmp_path / f"{trc}.mp4"
    tags = f"color_primaries=bt2020:color_trc={trc}:colorspace=bt2020nc:range=tv"
    ffmpeg(
        "-f", "rawvideo", "-pix_fmt", "rgb48le", "-s", f"{w}x{h}", "-r", "10", "-i", str(raw),
        "-vf", f"scale=out_color_matrix=bt2020:out_range=tv,format=yuv420p10le,setparams={tags}",
        "-c:v", "libx265", "-x265-params", "log-level=error:lossless=1", "-pix_fmt", "yuv420p10le", str(out),
    )  # fmt: skip
    return str(out)


def ffmpeg_tonemapped(clip: str, h: int = 64, w: int = 96) -> np.ndarray:
    """ffmpeg's own HDR -> SDR: zimg to linear light (100 cd/m2 = 1), BT.709 primaries, Hable at a 1000 cd/m2 peak,
    BT.709 (BT.1886) signal."""
    vf = (
        "zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,tonemap=hable:desat=0:peak=10,"
        "zscale=t=bt709:m=bt709:r=full,format=gbrp,format=rgb24"
    )
    out = subprocess.run(
        [FFMPEG, "-v", "error", "-i", clip, "-frames:v", "1", "-vf", vf, "-f", "rawvideo", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(out, np.uint8).reshape(h, w, 3)


@pytest.mark.parametrize("trc", ["arib-std-b67", "smpte2084"])
def test_hdr_is_tone_mapped_like_ffmpeg(tmp_path, trc, caplog):
    clip = hdr_clip(tmp_path, trc)
    ref = ffmpeg_tonemapped(clip)
    with caplog.at_level("INFO", logger="scailflow.decode"):
        frames, _ = read_video(clip)
    diff = np.abs(frames[0].astype(int) - ref)
    # tolerance: a mean of 2 levels in 255 and 99% of the values within 12 (swscale and zimg upsample the chroma
    # differently); reading the signal as if it were BT.709 is ~30 levels off on average
    assert diff.mean() <= 2.0 and np.percentile(diff, 99) <= 12, (diff.mean(), np.percentile(diff, 99))
    with av.open(clip) as c:
        naive = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(naive.astype(int) - ref).mean() > 10
    name = "HLG" if trc == "arib-std-b67" else "PQ"
    assert f"{name} BT.2020 HDR" in caplog.text and "tone-mapped to 8-bit BT.709 SDR" in caplog.text


@pytest.mark.parametrize("matrix,rng", [("bt709", "tv"), ("bt470bg", "tv"), ("bt709", "pc")])
def test_sdr_matrix_and_range_follow_the_tags(tmp_path, matrix, rng):
    up = upright_picture()
    raw = tmp_path / "p.rgb"
    up.tofile(raw)
    clip = tmp_path / "tagged.mp4"
    ffmpeg(
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", "10", "-i", str(raw),
        "-vf", f"scale=out_color_matrix={matrix}:out_range={rng},format=yuv444p,setparams=colorspace={matrix}:range={rng}",
        "-c:v", "libx264", "-qp", "0", str(clip),
    )  # fmt: skip
    frames, _ = read_video(clip)
    assert np.abs(frames[0].astype(int) - up).mean() < 1.5  # decoded with the matrix and range it was written in


def vfr_clip(tmp_path, seconds_per_frame: list[float]) -> str:
    """A clip whose frames last as given (written at 1000 fps timestamps, VFR muxing)."""
    n = len(seconds_per_frame)
    frames = np.zeros((n, 16, 16, 3), np.uint8)
    frames[:, :, :, 0] = (np.arange(n) * 255 // max(1, n - 1))[:, None, None]
    raw = tmp_path / "f.rgb"
    frames.tofile(raw)
    starts = np.concatenate([[0], np.cumsum(seconds_per_frame)[:-1]])
    expr = "+".join(f"{s:.4f}*eq(N\\,{i})" for i, s in enumerate(starts))
    out = tmp_path / "vfr.mp4"
    ffmpeg(
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "16x16", "-r", "1000", "-i", str(raw),
        "-vf", f"setpts=({expr})/TB", "-fps_mode", "vfr", "-video_track_timescale", "1000",
        "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", str(out),
    )  # fmt: skip
    return str(out)


def test_a_vfr_clip_keeps_its_duration(tmp_path):
    durations = [1 / 30] * 20 + [1 / 15] * 10 + [1 / 60] * 20  # 2/3 s + 2/3 s + 1/3 s = 5/3 s
    clip = vfr_clip(tmp_path, durations)
    info = probe_video(clip)
    assert info.vfr and info.frames == 50
    assert abs(info.duration - sum(durations)) < 0.01
    reader = open_video(clip)  # default: resampled by timestamp at the mean rate (30 fps at most)
    frames = list(reader)
    assert abs(len(frames) / reader.fps - sum(durations)) <= 1 / reader.fps
    # by timestamp: the slow part (each frame shown 1/15 s) is repeated, the fast part thinned
    red = [int(f[8, 8, 0]) for f in frames]
    assert red == sorted(red) and len(set(red)) < 50
    every = open_video(clip, driving_fps="source")
    assert len(list(every)) == 50 and abs(50 / every.fps - sum(durations)) < 0.01
    at16, fps16 = read_video(clip, driving_fps=16)
    assert fps16 == 16 and abs(len(at16) / 16 - sum(durations)) <= 1 / 16


def test_a_60fps_clip_is_taken_at_30_by_default_and_16_with_the_flag(tmp_path):
    n = 60  # one second
    frames = np.zeros((n, 16, 16, 3), np.uint8)
    frames[..., 0] = (np.arange(n) * 4)[:, None, None]
    clip = write_video(tmp_path / "sixty.mp4", frames, 60, lossless=True)
    by_default, fps = read_video(clip)
    assert fps == 30 and len(by_default) == 30
    assert [int(f[0, 0, 0]) for f in by_default] == [
        int(f[0, 0, 0]) for f in read_video(clip, driving_fps="source")[0][::2]
    ]
    at16, fps16 = read_video(clip, driving_fps=16)
    assert fps16 == 16 and len(at16) == 16  # the same second
    every, fps_all = read_video(clip, driving_fps="source")
    assert fps_all == 60 and len(every) == 60
    # a rate the clip already has is kept frame for frame (stages can read each other's files at the same rate)
    again = write_video(tmp_path / "at16.mp4", at16, 16, lossless=True)
    assert np.array_equal(read_video(again, driving_fps=16)[0], at16)


def test_an_ordinary_clip_is_read_as_before(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (7, 16, 16, 3), np.uint8)
    clip = write_video(tmp_path / "plain.mp4", frames, 25, lossless=True)
    got, fps = read_video(clip)
    assert fps == 25 and np.array_equal(got, frames)
    assert np.array_equal(np.concatenate(list(open_video(clip).windows(3, overlap=1))[:1]), frames[:3])


def test_streamed_frames_walk_forwards_holding_one_window(tmp_path):
    """Generation reads the driving video a segment at a time (overlapping windows, then back to the start)."""
    frames = np.random.default_rng(3).integers(0, 255, (20, 16, 16, 3), np.uint8)
    clip = write_video(tmp_path / "walk.mp4", frames, 16, lossless=True)
    streamed = StreamedFrames(open_video(clip))
    assert streamed.shape == frames.shape and len(streamed) == 20
    for start in (0, 4, 8, 12):  # segments of 9 with a 5-frame overlap
        assert np.array_equal(streamed[np.arange(start, start + 8)], frames[start : start + 8])
        assert min(streamed._held) == start  # nothing before the window is held
    assert np.array_equal(streamed[2:5], frames[2:5])  # behind: decoded again from the start
    assert np.array_equal(np.stack(list(streamed.limit(7))), frames[:7])
