"""Sound: output.mp4 carries the driving video's audio, trimmed to the frames kept (and to the output's fps), and
`--no-audio` leaves it out. Checked on real files made with PyAV (AAC sine tones), through real commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from scailflow.files import write_text_atomic
from scailflow.flows.demo import astronaut, sway_frames
from scailflow.media import write_image
from tests.support.folders import official_args, write_prepared

pytestmark = pytest.mark.integration  # starts processes/servers/full flows

TONE_HZ = 440.0


def write_video_with_tone(path, frames: np.ndarray, fps: float, seconds: float, rate: int = 44100) -> None:
    """H.264 frames plus an AAC stereo sine tone of `seconds` (longer or shorter than the picture)."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=int(fps))
        v.height, v.width = frames.shape[1:3]
        v.pix_fmt = "yuv420p"
        a = c.add_stream("aac", rate=rate, layout="stereo")
        for f in frames:
            for p in v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        n = int(seconds * rate)
        wave = (0.3 * np.sin(2 * np.pi * TONE_HZ * np.arange(n) / rate)).astype(np.float32)
        data = np.stack([wave, wave])
        for s in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data[:, s : s + 1024]), format="fltp", layout="stereo"
            )
            frame.sample_rate, frame.pts = rate, s
            for p in a.encode(frame):
                c.mux(p)
        for p in a.encode():
            c.mux(p)


def sound_of(path) -> tuple[float, float] | None:
    """(seconds of sound, its dominant frequency) as a player decodes them; None when the file is silent."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        stream = c.streams.audio[0]
        declared = float(stream.duration * stream.time_base)
        samples = np.concatenate([f.to_ndarray()[0] for f in c.decode(stream)])
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return declared, float(np.fft.rfftfreq(len(samples), 1 / stream.rate)[spectrum.argmax()])


def scailflow(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "scailflow.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env or dict(os.environ),
    )


@pytest.mark.slow
def test_output_keeps_the_driving_sound_trimmed_to_the_frames_kept_and_no_audio_drops_it(tmp_path, shared_server):
    folder = tmp_path / "dance"
    folder.mkdir()
    still = astronaut(64)
    write_image(folder / "ref.png", still)
    # 15 frames at 16 fps (0.94 s) with 3 s of sound: the model keeps 4k+1 = 13 frames, so 13/16 s of sound
    write_video_with_tone(folder / "driving.mp4", sway_frames(still, 15), 16, seconds=3.0)
    write_text_atomic(folder / "job.yaml", "sampling: {steps: 2, target_h: 64, target_w: 64, seed: 1}\n")
    env = shared_server[1]  # reported to the session's server: no temporary API per run
    r = scailflow("run", folder, "--model", "tiny-random", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    out = folder / "scailflow" / "output.mp4"
    seconds, pitch = sound_of(out)
    assert abs(seconds - 13 / 16) < 0.03, seconds  # trimmed to the 13 frames kept, not the 3 s of the source
    assert abs(pitch - TONE_HZ) < 5, pitch  # the driving video's tone, not noise
    assert "with the driving video's sound" in r.stderr
    assert json.loads((folder / "scailflow" / "output.mp4.json").read_text())["audio_from"]
    assert (folder / "driving.mp4").stat().st_size > 0 and sound_of(folder / "driving.mp4")[0] > 2.9  # untouched

    r = scailflow(
        "run", folder, "--model", "tiny-random", "--no-audio", env=env
    )  # a settings change re-runs generation
    assert r.returncode == 0, r.stderr[-2000:]
    assert "generate: cached" not in r.stderr
    assert sound_of(out) is None
    assert json.loads((folder / "scailflow" / "output.mp4.json").read_text())["audio_from"] is None


def test_generate_takes_the_sound_of_its_pose_video_at_the_output_fps(tmp_path):
    d = write_prepared(tmp_path)  # 11 frames at 24 fps: 9 are kept (4k+1)
    frames = np.random.default_rng(1).integers(0, 255, (11, 96, 64, 3), dtype=np.uint8)
    write_video_with_tone(d / "rendered_v2.mp4", frames, 24, seconds=1.0)
    common = ["--model", "tiny-random", "--target_h", 64, "--target_w", 32, "--steps", 2, "--seed", 5]
    r = scailflow("generate", *official_args(d), *common, "--fps", 16)
    assert r.returncode == 0, r.stderr[-2000:]
    seconds, pitch = sound_of(d / "out.mp4")
    assert abs(seconds - 9 / 16) < 0.03 and abs(pitch - TONE_HZ) < 5, (seconds, pitch)  # the official 16 fps timing
    assert "plays at 16 fps, the driving video at 24 fps" in r.stderr  # the user is told it will not line up
    r = scailflow("generate", *official_args(d), *common, "--no-audio")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sound_of(d / "out.mp4") is None
