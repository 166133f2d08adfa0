"""The one video decoder every stage uses: upright, true colours, frames taken by timestamp, one frame at a time.

`open_video(path, driving_fps=..., size=...)` probes the file and plans what will be taken; iterating the reader
decodes, orients, converts and resizes one frame at a time, so a caller that processes frames (or windows of
frames, `reader.windows(n)`) as they come never holds the clip at source resolution. `read_video` is the same
reader gathered into one array, for the callers that need the whole clip.

- Orientation: the display matrix (frame side data, as phones write it) or else the legacy `rotate` tag is applied
  to the pixels: 90, 180, 270 degrees and mirrored matrices, as a player shows the video. PyAV does not apply it.
- Colour: 8-bit (and 10-bit SDR) video goes through swscale with the matrix (BT.601 / BT.709 / BT.2020) and range
  (limited / full) the frames are tagged with (untagged: swscale's BT.601, limited, as decord and today's readers);
  HLG and PQ video is tone-mapped to BT.709 SDR (scailflow.hdr); SDR in BT.2020 primaries is converted to BT.709.
- Rate: frames are taken by their presentation time (pts * time_base), never by index: for a rate `r`, output
  frame k is the source frame shown nearest to t0 + k / r, and the output has round(duration * r) frames, so it
  lasts as long as the input within one frame whatever the source's timing (VFR phone clips included).
  `driving_fps` None: the source's rate, capped at 30 by the smallest whole divisor (60 -> 30, 59.94 -> 29.97,
  50 -> 25, 120 -> 30), every frame of a constant-rate clip at 30 fps or less; "source": every frame (a VFR clip
  then plays at its mean rate); a number: that rate.
"""

from __future__ import annotations

import logging
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from scailflow.errors import InputError
from scailflow.hdr import DEFAULT_PEAK_NITS, hdr_to_sdr, wide_gamut_to_bt709
from scailflow.heap import TRIM_EVERY, release_freed_memory

log = logging.getLogger("scailflow.decode")
MAX_FRAME_PIXELS = 4096 * 4096  # 4K and DCI 4K video frames fit; 8K does not
DEFAULT_MAX_FPS = 30.0
FALLBACK_FPS = 16.0  # a video that says no rate at all

# libavutil's enum values (AVColorTransferCharacteristic / AVColorPrimaries / AVColorSpace / AVColorRange)
TRC_PQ, TRC_HLG = 16, 18
PRI_BT2020 = 9
SPC_NAMES = {0: "RGB", 1: "BT.709", 4: "FCC", 5: "BT.601", 6: "BT.601", 7: "SMPTE 240M", 9: "BT.2020", 10: "BT.2020"}
RANGE_NAMES = {1: "limited", 2: "full"}


@dataclass(frozen=True)
class VideoInfo:
    """What probing a video finds (sizes are the upright picture's, as a player shows it)."""

    path: Path
    width: int
    height: int
    fps: float  # the container's rate (for a VFR clip: frames / duration)
    frames: int  # packets counted by demuxing (decoded count when counted)
    duration: float = 0.0  # seconds, first frame's start to the last frame's end
    vfr: bool = False
    rotation: int = 0  # degrees counter-clockwise a player turns the stored pixels
    mirrored: bool = False
    colour: str = ""  # how its colours are converted, in words
    stored_width: int = 0
    stored_height: int = 0


@dataclass(frozen=True)
class Orientation:
    """A display matrix reduced to what it does to the pixel grid: transpose, then flip rows / columns."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @classmethod
    def from_matrix(cls, m) -> Orientation:
        """From the 3x3 display matrix (9 int32, 16.16 fixed point): display (x', y') = (a x + c y, b x + d y)."""
        a, b, c, d = (int(np.sign(v)) for v in (m[0], m[1], m[3], m[4]))
        if a == 0 and d == 0:  # x' follows y and y' follows x
            return cls(True, b < 0, c < 0)
        return cls(False, d < 0, a < 0)

    @classmethod
    def from_rotate_tag(cls, degrees: float) -> Orientation:
        """The legacy `rotate` tag: degrees clockwise a player turns the stored picture."""
        t = math.radians(degrees)
        # the display matrix that rotates clockwise by `degrees` (counter-clockwise by -degrees)
        return cls.from_matrix([round(math.cos(t)), round(math.sin(t)), 0, round(-math.sin(t)), round(math.cos(t))])

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    @property
    def degrees(self) -> tuple[int, bool]:
        """(counter-clockwise rotation, mirrored) as a player would describe it."""
        for k in range(4):
            for mirror in (False, True):
                if self._of(k, mirror) == self:
                    return 90 * k, mirror
        return 0, False

    @staticmethod
    def _of(k: int, mirror: bool) -> Orientation:
        # counter-clockwise k quarter turns of the picture, after a horizontal mirror when `mirror`
        probe = np.arange(6).reshape(2, 3)
        out = np.rot90(probe[:, ::-1] if mirror else probe, k)
        for tr in (False, True):
            for fr in (False, True):
                for fc in (False, True):
                    o = Orientation(tr, fr, fc)
                    if np.array_equal(o.apply(probe[..., None])[..., 0], out):
                        return o
        raise AssertionError("unreachable")

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        if self.transpose:
            rgb = rgb.transpose(1, 0, *range(2, rgb.ndim))
        if self.flip_rows:
            rgb = rgb[::-1]
        if self.flip_cols:
            rgb = rgb[:, ::-1]
        return rgb if self.identity else np.ascontiguousarray(rgb)

    def describe(self) -> str:
        deg, mirror = self.degrees
        parts = ([f"rotated {deg}°"] if deg else []) + (["mirrored"] if mirror else [])
        return " and ".join(parts) or "as stored"


def open_container(path: Path):
    """The container of a user's video, or one InputError line naming the file."""
    if not path.is_file():
        raise InputError(f"video not found: {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise InputError(f"cannot read video {path}: {e}") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path} has no video stream")
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):
        container.close()
        raise InputError(f"cannot read video {path}: it is an image ({fmt}), not a video")
    return container


def stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def check_frame_size(path: Path, width: int, height: int) -> None:
    if width * height > MAX_FRAME_PIXELS:
        raise InputError(
            f"{path} is {width}x{height}, larger than the {MAX_FRAME_PIXELS / 1e6:.1f} MP a frame scailflow decodes: "
            "downscale it (the model uses at most 4096 px a side)"
        )


def _side_data(frame, name: str) -> bytes | None:
    # PyAV 18.1.1 made `frame.side_data` a real mapping (iterating gives its keys); 18.1.0 iterates the side data
    data = frame.side_data
    for item in data:
        sd = item if hasattr(item, "type") else data[item]
        if sd.type.name == name:
            return bytes(sd)
    return None


def frame_orientation(frame, stream) -> tuple[Orientation, str]:
    """The frame's display matrix, else the stream's legacy `rotate` tag; and where it came from."""
    raw = _side_data(frame, "DISPLAYMATRIX")
    if raw is not None and len(raw) >= 36:
        return Orientation.from_matrix(struct.unpack("<9i", raw[:36])), "display matrix"
    tag = next((v for k, v in (stream.metadata or {}).items() if k.lower() == "rotate"), None)
    if tag:
        try:
            return Orientation.from_rotate_tag(float(tag)), "rotate tag"
        except ValueError:
            log.warning("%s: ignoring its unreadable rotate tag %r", stream.container.name, tag)
    return Orientation(), ""


def _peak_nits(frame) -> float:
    """A PQ stream's peak: its content light level (MaxCLL), else its mastering display's, else 1000 cd/m2."""
    cll = _side_data(frame, "CONTENT_LIGHT_LEVEL")
    if cll is not None and len(cll) >= 4 and struct.unpack("<I", cll[:4])[0] > 0:
        return float(struct.unpack("<I", cll[:4])[0])
    mdm = _side_data(frame, "MASTERING_DISPLAY_METADATA")
    if mdm is not None and len(mdm) >= 120:
        num, den = struct.unpack("<2i", mdm[104:112])
        has_luminance = struct.unpack("<i", mdm[116:120])[0]
        if has_luminance and den > 0 and num > 0:
            return num / den
    return DEFAULT_PEAK_NITS


@dataclass(frozen=True)
class ColourPlan:
    """How one stream's frames become BT.709 RGB uint8."""

    kind: str  # "sdr" (swscale), "hlg" / "pq" (tone map), "wide" (BT.2020 SDR primaries -> BT.709)
    peak_nits: float = 0.0
    matrix: str = ""
    range: str = ""
    bits: int = 8

    @classmethod
    def of(cls, frame) -> ColourPlan:
        bits = max((c.bits for c in frame.format.components), default=8)
        matrix = SPC_NAMES.get(int(frame.colorspace), "untagged (BT.601)")
        rng = RANGE_NAMES.get(int(frame.color_range), "untagged (limited)")
        trc = int(frame.color_trc)
        if trc == TRC_HLG:
            return cls("hlg", DEFAULT_PEAK_NITS, matrix, rng, bits)
        if trc == TRC_PQ:
            return cls("pq", _peak_nits(frame), matrix, rng, bits)
        if int(frame.color_primaries) == PRI_BT2020:
            return cls("wide", 0.0, matrix, rng, bits)
        return cls("sdr", 0.0, matrix, rng, bits)

    def describe(self) -> str:
        src = f"{self.bits}-bit {self.matrix} matrix, {self.range} range"
        if self.kind in ("hlg", "pq"):
            name = "HLG" if self.kind == "hlg" else "PQ"
            return f"{name} BT.2020 HDR ({src}) tone-mapped to 8-bit BT.709 SDR (Hable, peak {self.peak_nits:g} cd/m2)"
        if self.kind == "wide":
            return f"BT.2020 SDR ({src}) converted to BT.709 primaries, 8-bit"
        return f"{src} -> RGB" + (", 8-bit" if self.bits > 8 else "")

    def convert(self, frame, width: int | None = None, height: int | None = None) -> np.ndarray:
        """The frame (resized to width x height when given) as RGB uint8 [H, W, 3]."""
        size = {} if width is None else {"width": width, "height": height, "interpolation": "BICUBIC"}
        if self.kind == "sdr":
            return frame.to_ndarray(format="rgb24", **size)
        spc = {} if int(frame.colorspace) in SPC_NAMES else {"src_colorspace": "bt2020"}
        rgb48 = frame.to_ndarray(format="rgb48le", **size, **spc)
        if self.kind == "wide":
            return wide_gamut_to_bt709(rgb48)
        return hdr_to_sdr(rgb48, self.kind, self.peak_nits)


def _first_frame(container, stream):
    try:
        for frame in container.decode(stream):
            return frame
    except (av.error.FFmpegError, ValueError):
        return None
    return None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size (upright), rate, frame count, duration and timing (from demuxing, without decoding the clip), and the
    orientation and colours of its first frame."""
    path = Path(path)
    container = open_container(path)
    try:
        stream = container.streams.video[0]
        sw, sh = stream.codec_context.width, stream.codec_context.height
        check_frame_size(path, sw, sh)
        times: list[int] = []
        last_pts, last_duration = None, 0  # the duration of the last frame shown (not the last in decode order)
        count = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    count += 1
                    if packet.pts is not None:
                        times.append(packet.pts)
                        if last_pts is None or packet.pts > last_pts:
                            last_pts, last_duration = packet.pts, packet.duration or 0
        except av.error.FFmpegError as e:
            raise InputError(f"cannot read video {path}: {e}") from None
        fps = stream_fps(stream)
        tb = float(stream.time_base) if stream.time_base else 0.0
        duration, vfr = _timing(sorted(times), last_duration, tb, count, fps)
        if vfr and duration > 0:
            fps = count / duration
        container.seek(0)
        first = _first_frame(container, stream)
        orient, colour = (Orientation(), "") if first is None else (frame_orientation(first, stream)[0], "")
        if first is not None:
            colour = ColourPlan.of(first).describe()
            sw, sh = first.width, first.height
        deg, mirror = orient.degrees
        w, h = (sh, sw) if orient.transpose else (sw, sh)
        return VideoInfo(path, w, h, fps, count, duration, vfr, deg, mirror, colour, sw, sh)
    finally:
        container.close()


def _timing(pts: list[int], last_duration: int, tb: float, count: int, fps: float) -> tuple[float, bool]:
    """(duration in seconds, variable rate?) from the sorted packet timestamps."""
    if len(pts) < 2 or not tb:
        return (count / fps if fps else 0.0), False
    steps = np.diff(np.asarray(pts, np.int64))
    steps = steps[steps > 0]
    if steps.size == 0:
        return (count / fps if fps else 0.0), False
    typical = float(np.median(steps))
    vfr = bool(steps.max() - steps.min() > max(1.0, 0.02 * typical))
    last_step = pts[-1] - pts[-2] if pts[-1] > pts[-2] else typical
    # a muxer that did not know the last frame's duration writes 0 or 1 tick: it is then shown as long as the one before
    tail = last_duration if last_duration >= 0.5 * last_step else last_step
    return (pts[-1] - pts[0] + tail) * tb, vfr


def resolve_rate(info: VideoInfo, driving_fps: float | str | None) -> float | None:
    """The rate frames are taken at (None: every frame), from `sampling.driving_fps` and the source."""
    if driving_fps in ("source", "all"):
        return None
    if driving_fps is not None:
        rate = float(driving_fps)
        if not rate > 0:
            raise InputError(f"driving_fps must be a positive rate or 'source', got {driving_fps!r}")
        return rate
    src = info.fps if info.fps and math.isfinite(info.fps) and info.fps > 0 else FALLBACK_FPS
    if not info.vfr and src <= DEFAULT_MAX_FPS + 0.01:
        return None  # a constant-rate clip at 30 fps or less: every frame, as it always was
    return src / math.ceil(src / DEFAULT_MAX_FPS - 1e-3)


class VideoReader:
    """One video, planned: iterate it for upright, BT.709, RGB uint8 frames at `fps`, one at a time.

    `size`: (height, width) of the upright output (swscale bicubic), else the upright source size.
    `max_frames`: stop after that many frames.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        driving_fps: float | str | None = None,
        size: tuple[int, int] | None = None,
        max_frames: int | None = None,
        info: VideoInfo | None = None,
    ):
        self.path = Path(path)
        self.info = info or probe_video(self.path)
        self.rate = resolve_rate(self.info, driving_fps)
        source_fps = self.info.fps if self.info.fps > 0 and math.isfinite(self.info.fps) else FALLBACK_FPS
        self.fps = float(self.rate or source_fps)
        planned = round(self.info.duration * self.rate) if self.rate and self.info.duration else self.info.frames
        self.frames = max(1, planned)
        if max_frames is not None:
            self.frames = min(self.frames, max_frames)
        self.size = size
        self.height, self.width = size if size else (self.info.height, self.info.width)
        self._limit = self.frames if self.rate is not None else (max_frames or math.inf)

    def describe(self) -> str:
        """One line: what is taken from the file and how it is converted."""
        i = self.info
        taken = (
            f"every frame at {self.fps:.4g} fps"
            if self.rate is None
            else f"{self.frames} frames at {self.fps:.4g} fps by timestamp"
        )
        shape = f"{i.stored_width}x{i.stored_height}"
        turned = f", shown {turned_text(i)} -> {i.width}x{i.height}" if i.rotation or i.mirrored else ""
        timing = f"{'VFR, mean ' if i.vfr else ''}{i.fps:.4g} fps, {i.frames} frames, {i.duration:.2f} s"
        return f"{i.path.name}: {shape}{turned}; {i.colour}; source {timing}; taken: {taken}"

    @property
    def converts(self) -> bool:
        """Whether the frames differ from a plain decode (turned, tone-mapped, other primaries, resampled)."""
        i = self.info
        return (
            self.rate is not None
            or bool(i.rotation or i.mirrored)
            or "BT.709 SDR" in i.colour
            or "primaries" in i.colour
        )

    def record(self) -> dict:
        """What was taken, for output.mp4.json."""
        i = self.info
        return {
            "source_fps": round(i.fps, 4),
            "source_frames": i.frames,
            "source_duration": round(i.duration, 4),
            "vfr": i.vfr,
            "driving_fps": round(self.fps, 4),
            "taken": "every frame" if self.rate is None else "by timestamp",
            "rotation": i.rotation,
            "mirrored": i.mirrored,
            "colour": i.colour,
        }

    def __iter__(self) -> Iterator[np.ndarray]:
        container = open_container(self.path)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            yield from self._frames(container, stream)
        finally:
            container.close()

    def frames_at(self, indices) -> tuple[dict[int, np.ndarray], int]:
        """The output frames at these indices (the others are decoded, not converted) and the number of output
        frames: (frames by index, count)."""
        wanted = set(indices)
        container = open_container(self.path)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            picked, count = {}, 0
            for count, rgb in enumerate(self._frames(container, stream, wanted), 1):
                if rgb is not None:
                    picked[count - 1] = rgb
            return picked, count
        finally:
            container.close()

    def _frames(self, container, stream, wanted: set[int] | None = None) -> Iterator[np.ndarray | None]:
        plan: ColourPlan | None = None
        orient = Orientation()
        shape = None
        emitted = 0
        index = 0
        prev = prev_time = None
        held: dict[str, np.ndarray] = {}  # `prev` converted, once, however many output times it fills
        t0 = None
        step = 1.0 / self.rate if self.rate else 0.0

        def convert(frame) -> np.ndarray:
            nonlocal shape
            if self.size is None:
                rgb = plan.convert(frame)
            else:
                h, w = self.size
                rgb = plan.convert(frame, *((h, w) if orient.transpose else (w, h)))
            if shape is None:
                shape = rgb.shape
            elif rgb.shape != shape:
                raise InputError(f"video {self.path} changes frame size mid-stream ({shape} then {rgb.shape})")
            return orient.apply(rgb)

        def shown(frame) -> np.ndarray:
            if "rgb" not in held:
                held["rgb"] = convert(frame)
            return held["rgb"]

        decoded = container.decode(stream)
        while emitted < self._limit:
            try:
                frame = next(decoded)
            except StopIteration:
                break
            except (av.error.FFmpegError, ValueError) as e:
                if index == 0:
                    raise InputError(f"cannot decode video {self.path}: {e}") from None
                log.warning("%s: decoding stopped at frame %d (%s): kept the frames before it", self.path, index, e)
                if self.rate is not None and prev is not None:  # no frames past the last one that decoded
                    self._limit = min(self._limit, int((prev_time - t0) / step + 0.5) + 1)
                break
            if plan is None:
                check_frame_size(self.path, frame.width, frame.height)
                plan = ColourPlan.of(frame)
                orient = frame_orientation(frame, stream)[0]
            index += 1
            if self.rate is None:
                yield convert(frame) if wanted is None or emitted in wanted else None
                emitted += 1
                continue
            t = frame.time if frame.pts is not None else (index - 1) / self.fps
            if t0 is None:
                t0 = t
            if prev is not None:
                while emitted < self._limit and t0 + emitted * step - prev_time <= t - (t0 + emitted * step):
                    yield None if wanted is not None and emitted not in wanted else shown(prev)
                    emitted += 1
            prev, prev_time = frame, t
            held.clear()
        if self.rate is not None and prev is not None:
            while emitted < self._limit:  # the last frame is shown to the end of the clip
                yield None if wanted is not None and emitted not in wanted else shown(prev)
                emitted += 1
        if index == 0:
            raise InputError(f"video {self.path} has no frames")

    def windows(self, length: int, overlap: int = 0) -> Iterator[np.ndarray]:
        """Frames [n, H, W, 3] `length` at a time, each window starting `length - overlap` after the previous one;
        the last window may be shorter. Holds one window (and its overlap) at a time."""
        if not 0 <= overlap < length:
            raise ValueError(f"overlap must be in [0, {length}), got {overlap}")
        held: list[np.ndarray] = []
        fresh = 0
        for rgb in self:
            held.append(rgb)
            fresh += 1
            if len(held) == length:
                yield np.stack(held)
                held, fresh = held[length - overlap :] if overlap else [], 0
        if fresh:
            yield np.stack(held)


class StreamedFrames:
    """A video's frames by index, decoded in order when asked for: `frames[a:b]` or `frames[index_array]` gives
    uint8 [n, H, W, 3]. Only the frames from the lowest index asked for last onwards are held, so a caller that
    walks the clip forwards (generation's segments, which overlap a little) holds one window at a time; asking for
    an earlier frame decodes again from the start. `transform(indices, frames)` is applied to what is returned
    (a mask's edits and palette snap). It has `shape`, `ndim` and `len` like the array it stands for."""

    def __init__(self, reader: VideoReader, count: int | None = None, transform=None):
        self.reader = reader
        self.count = reader.frames if count is None else min(count, reader.frames)
        self.transform = transform
        self._frames: Iterator[np.ndarray] | None = None
        self._next = 0  # index of the next frame the decoder gives
        self._held: dict[int, np.ndarray] = {}
        self._last: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.count, self.reader.height, self.reader.width, 3)

    ndim = 4
    dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return self.count

    def limit(self, count: int) -> StreamedFrames:
        """The first `count` frames (the same decoder)."""
        self.count = min(self.count, count)
        return self

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            indices = np.arange(self.count)[key]
        elif isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        else:
            indices = np.asarray(key, np.int64)
        if indices.size == 0:
            return np.zeros((0, *self.shape[1:]), np.uint8)
        if indices.min() < 0 or indices.max() >= self.count:
            raise IndexError(f"frames {indices.min()}..{indices.max()} of {self.count}")
        lo, hi = int(indices.min()), int(indices.max())
        if lo < self._next and lo not in self._held:  # behind what is held: decode again from the start
            self._frames, self._next, self._held = None, 0, {}
        for i in [i for i in self._held if i < lo]:
            del self._held[i]
        if self._frames is None:
            self._frames = iter(self.reader)
        while self._next <= hi:
            rgb = next(self._frames, None)
            if rgb is None:  # fewer frames than the file said: its last frame stands for the missing ones
                if self._last is None:
                    raise InputError(f"video {self.reader.path} has no frames")
                log.warning("%s: frame %d is missing: its last frame is used", self.reader.path, self._next)
                rgb = self._last
            self._last = rgb
            if self._next >= lo:
                self._held[self._next] = rgb
            self._next += 1
            if self._next % TRIM_EVERY == 0:  # freed frames' pages back to the system (see scailflow.heap)
                release_freed_memory()
        out = np.stack([self._held[int(i)] for i in indices])
        return self.transform(indices, out) if self.transform is not None else out

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, self.count, 16):
            yield from self[start : min(start + 16, self.count)]


def turned_text(info: VideoInfo) -> str:
    parts = ([f"rotated {info.rotation}°"] if info.rotation else []) + (["mirrored"] if info.mirrored else [])
    return " and ".join(parts)


def open_video(
    path: str | os.PathLike,
    driving_fps: float | str | None = None,
    size: tuple[int, int] | None = None,
    max_frames: int | None = None,
) -> VideoReader:
    """Probe a video and plan what will be taken (see the module docstring); iterate the result for frames."""
    return VideoReader(path, driving_fps, size, max_frames)


def decode_budget() -> int:
    """Bytes of decoded frames one `read_video` may hold: half this machine's memory."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError):
        return 16 << 30


def read_video(
    path: str | os.PathLike,
    max_frames: int | None = None,
    driving_fps: float | str | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, float]:
    """The whole clip as RGB uint8 [T, H, W, 3] (upright, BT.709, taken at `driving_fps`) and its rate.

    This holds every frame of the output: callers that can work a frame or a window at a time should iterate
    `open_video` instead. Refused before decoding when the output would take more than half the machine's memory."""
    reader = open_video(path, driving_fps, size, max_frames)
    need = reader.frames * reader.width * reader.height * 3
    if need > decode_budget():
        raise InputError(
            f"{reader.path}: {reader.frames} frames of {reader.width}x{reader.height} need {need / 2**30:.1f} GiB "
            f"decoded, more than half this machine's memory ({decode_budget() / 2**30:.1f} GiB): trim or downscale "
            "it, or lower --driving_fps"
        )
    (log.info if reader.converts else log.debug)("decode %s", reader.describe())
    out = np.empty((reader.frames, reader.height, reader.width, 3), np.uint8)
    extra: list[np.ndarray] = []  # frames past the demuxed count (rare): kept, not refused
    n = 0
    for n, rgb in enumerate(reader, 1):
        if n <= len(out):
            out[n - 1] = rgb
        else:
            extra.append(rgb)
    return (np.concatenate([out, np.stack(extra)]) if extra else out[:n]), reader.fps
