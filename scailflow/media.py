"""Image and video I/O shared by every stage: RGB uint8 numpy arrays in, H.264 mp4 / PNG out, atomically.

Videos are encoded here with PyAV (OpenCV's build here cannot write H.264) and decoded by scailflow.decode (upright,
BT.709, taken by timestamp, streamed), whose readers are re-exported here. Every failure to read a
user's file becomes one `InputError` line naming the file. Images are turned upright by their EXIF orientation
(a portrait phone photo is stored sideways) and sizes are checked from the header, before anything is decoded.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from scailflow.decode import (  # noqa: F401 - the video readers, re-exported where every stage imports them
    MAX_FRAME_PIXELS,
    StreamedFrames,
    VideoInfo,
    VideoReader,
    decode_budget,
    open_video,
    probe_video,
    read_video,
)
from scailflow.errors import InputError
from scailflow.files import atomic_path

log = logging.getLogger("scailflow.media")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
# a 48 MP phone photo fits; the model works at most 4096 px a side, so larger images only cost memory
MAX_IMAGE_PIXELS = 50_000_000


def _too_big(path: Path, w: int, h: int) -> InputError:
    return InputError(
        f"{path} is {w}x{h} ({w * h / 1e6:.0f} MP), more than the {MAX_IMAGE_PIXELS / 1e6:.0f} MP scailflow reads: "
        "downscale it (the model uses at most 4096 px a side)"
    )


def load_image(path: str | os.PathLike) -> Image.Image:
    """A user's image decoded in memory and upright (EXIF orientation applied); its size is checked from the header
    before anything is decoded. Every failure is one InputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    size = None
    try:
        with warnings.catch_warnings(), Image.open(path) as im:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked here instead
            if im.width * im.height > MAX_IMAGE_PIXELS:
                size = im.size
            else:
                im.load()
                return ImageOps.exif_transpose(im)  # always a new image, independent of the file
    except Image.DecompressionBombError:
        raise InputError(f"{path}: the image is too large to decode safely; downscale it") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InputError(f"cannot read image {path}: {e.__class__.__name__}: {e}") from None
    raise _too_big(path, *size)


def read_image(path: str | os.PathLike, alpha: str = "white") -> np.ndarray:
    """Read any PIL image (CMYK, 16-bit, palette, alpha) as upright RGB uint8 [H, W, 3].

    `alpha`: "white" composites a transparent image on white; "drop" keeps the stored colours under the alpha, as
    the official SCAIL-2 code's `Image.open(p).convert("RGB")` does (what generation reads)."""
    path = Path(path)
    im = load_image(path)
    try:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
            im = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
        if alpha == "white" and (im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)):
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, rgba)
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read image {path}: {e.__class__.__name__}: {e}") from None
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise InputError(f"image {path} is too small ({rgb.shape[1]}x{rgb.shape[0]})")
    return rgb


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write RGB uint8 [H, W, 3] atomically (PNG is lossless; JPEG at quality 95)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        im = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
        if path.suffix.lower() in (".jpg", ".jpeg"):
            im.save(tmp, format="JPEG", quality=95)
        else:
            im.save(tmp, format="PNG", compress_level=1)  # lossless either way; 4x faster than 6, ~20% larger
    return path


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray] | np.ndarray,
    fps: float,
    *,
    lossless: bool = False,
    crf: int = 17,
    audio_from: str | os.PathLike | None = None,
) -> Path:
    """Encode RGB uint8 frames to H.264 mp4 atomically.

    `lossless=True` uses x264's lossless RGB mode (libx264rgb, qp 0): every pixel survives exactly, which
    is what mask videos need (the model thresholds colours at 226). Otherwise yuv420p at `crf`.
    `audio_from`: a video whose first audio stream is carried over (AAC), from its start to the written frames'
    duration (frames / fps); a file without sound, or sound that cannot be decoded, leaves the video silent.
    """
    with VideoWriter(path, fps, lossless=lossless, crf=crf, audio_from=audio_from) as out:
        for frame in frames:
            out.write(frame)
    return Path(path)


class VideoWriter:
    """`write_video` a frame at a time, for a caller that writes two videos in one pass:
    `with VideoWriter(path, fps, lossless=True) as out: out.write(frame)`. The file appears whole when the block
    ends without an error, never otherwise (an empty block is an InputError)."""

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        *,
        lossless: bool = False,
        crf: int = 17,
        audio_from: str | os.PathLike | None = None,
    ):
        self.path, self.lossless, self.crf = Path(path), lossless, crf
        self.rate = Fraction(fps).limit_denominator(1001)
        self.sound = audio_track(audio_from) if audio_from is not None else None
        self.count = 0
        self._stream = self._audio = None

    def __enter__(self) -> VideoWriter:
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        try:
            self._container = av.open(str(tmp), mode="w", format="mp4")
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise
        return self

    def _open_stream(self, h: int, w: int) -> None:
        if self.lossless:
            stream = self._container.add_stream("libx264rgb", rate=self.rate)
            stream.pix_fmt = "rgb24"
            stream.options = {"qp": "0", "preset": "veryfast"}
        else:
            if h % 2 or w % 2:
                raise InputError(f"H.264 (yuv420p) needs even sizes, got {w}x{h} for {self.path.name}")
            stream = self._container.add_stream("libx264", rate=self.rate)
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(self.crf), "preset": "medium"}
        stream.width, stream.height = w, h
        self._stream = stream
        self._audio = self.sound.add_to(self._container) if self.sound is not None else None

    def write(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if self._stream is None:
            self._open_stream(*frame.shape[:2])
        self.count += 1
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)

    def __exit__(self, *exc) -> bool:
        try:
            try:
                if exc[0] is None:
                    if self._stream is None:
                        raise InputError(f"no frames to write to {self.path}")
                    for packet in self._stream.encode():
                        self._container.mux(packet)
                    if self._audio is not None:
                        self.sound.encode(self._container, self._audio, self.count / float(self.rate))
            finally:
                self._container.close()
        except BaseException:  # the temporary file goes; a full disk becomes an OutputError, as in atomic_path
            if not self._atomic.__exit__(*sys.exc_info()):
                raise
            return False
        return bool(self._atomic.__exit__(*exc))


# ------------------------------------------------------------------------------------------------ sound
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


@dataclass(frozen=True)
class AudioTrack:
    """The first audio stream of a video, re-encoded as AAC into another mp4 (PyAV only, no ffmpeg binary)."""

    path: Path
    rate: int
    layout: str  # "mono" or "stereo" (more channels are mixed down to stereo)
    offset: float  # seconds the sound starts after the first video frame (negative: before it)

    def add_to(self, container):
        stream = container.add_stream("aac", rate=self.rate, layout=self.layout)
        stream.bit_rate = 96_000 if self.layout == "mono" else 192_000
        return stream

    def encode(self, container, stream, duration: float) -> None:
        """Decode, trim to [0, duration) of the video's timeline (silence before a late start) and encode."""
        total = int(round(duration * self.rate))
        frame_size = stream.codec_context.frame_size or 1024
        resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        channels = 1 if self.layout == "mono" else 2
        skip = max(0, int(round(-self.offset * self.rate)))
        pending = [np.zeros((channels, max(0, int(round(self.offset * self.rate)))), np.float32)]
        written = 0

        def emit(flush: bool) -> None:
            nonlocal pending, written
            buf = np.concatenate(pending, axis=1)[:, : total - written]
            n = buf.shape[1] if flush else buf.shape[1] // frame_size * frame_size
            for start in range(0, n, frame_size):
                chunk = np.ascontiguousarray(buf[:, start : min(n, start + frame_size)])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=self.layout)
                frame.sample_rate, frame.pts = self.rate, written
                written += chunk.shape[1]
                for packet in stream.encode(frame):
                    container.mux(packet)
            pending = [buf[:, n:]]

        src = av.open(str(self.path))
        try:
            for decoded in src.decode(src.streams.audio[0]):
                for frame in resampler.resample(decoded):
                    samples = frame.to_ndarray().reshape(channels, -1)
                    if skip:
                        cut = min(skip, samples.shape[1])
                        samples, skip = samples[:, cut:], skip - cut
                    pending.append(samples)
                if sum(p.shape[1] for p in pending) >= frame_size:
                    emit(flush=False)
                if written >= total:
                    break
        except (av.error.FFmpegError, ValueError) as e:
            log.warning("the sound of %s stops early (%s): kept what decoded", self.path, e)
        finally:
            src.close()
        if written < total:
            emit(flush=True)
        for packet in stream.encode(None):
            container.mux(packet)


def audio_track(path: str | os.PathLike) -> AudioTrack | None:
    """The sound of a video, or None when it has none (or none that decodes)."""
    path = Path(path)
    try:
        with av.open(str(path)) as src:
            if not src.streams.audio:
                return None
            a = src.streams.audio[0]
            rate = a.codec_context.sample_rate or a.rate or 48000
            channels = a.codec_context.channels or 2
            start_a = float(a.start_time * a.time_base) if a.start_time is not None and a.time_base else 0.0
            v = src.streams.video[0] if src.streams.video else None
            start_v = float(v.start_time * v.time_base) if v is not None and v.start_time is not None else 0.0
            next(src.decode(a))  # it decodes
    except (av.error.FFmpegError, OSError, ValueError, StopIteration) as e:
        log.warning("the sound of %s cannot be read (%s): the output is silent", path, e)
        return None
    rate = rate if rate in AAC_RATES else 48000
    return AudioTrack(path, int(rate), "mono" if channels == 1 else "stereo", start_a - start_v)


def has_audio(path: str | os.PathLike) -> bool:
    try:
        with av.open(str(path)) as src:
            return bool(src.streams.audio)
    except (av.error.FFmpegError, OSError, ValueError):
        return False
