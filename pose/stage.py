"""`prepare_driving`: the driving input of a SCAIL-2 job (end-to-end copy or pose-driven skeleton render)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict

from scailflow.decode import StreamedFrames
from scailflow.errors import InputError
from scailflow.files import atomic_path
from scailflow.heap import TRIM_EVERY, release_freed_memory
from scailflow.layout import ANIMATION_MASK, RENDERED
from scailflow.media import VideoWriter, open_video, read_image, write_video
from scailflow.options import DrivingMode, choices
from scailflow.pose.align import Alignment, apply_to_overlay, fit_to_reference
from scailflow.pose.options import Palette, PoseOptions
from scailflow.pose.render2d import composite, draw_flat_limbs, draw_person_overlay
from scailflow.pose.render3d import Camera, Renderer, build_capsules
from scailflow.pose.runtime import torch_device
from scailflow.pose.skeleton import N_JOINTS3D, PersonPose, person_colour
from scailflow.pose.tracker import track
from scailflow.pose.weights import PoseWeights
from scailflow.progress import iterate

log = logging.getLogger("scailflow.pose")


DRIVING_MODES = choices(DrivingMode)
PALETTES = choices(Palette)


def output_paths(out_dir: Path | str, driving: str = "end-to-end") -> list[Path]:
    """The files `prepare_driving` writes: the driving input, and in pose mode the skeleton's mask render."""
    return [Path(out_dir) / RENDERED] + ([Path(out_dir) / ANIMATION_MASK] if driving == "pose" else [])


class PoseResult(BaseModel):
    """What prepare_driving wrote. Crosses the task boundary as is (Prefect persists it): `seconds` is the stage's
    own time, set by its task; `timings` splits the library's part of it by step."""

    model_config = ConfigDict(frozen=True)

    rendered: Path
    mask_render: Path | None = None
    fps: float
    frames: int
    backend: str
    width: int = 0
    height: int = 0
    persons: int = 0
    alignment: dict | None = None
    timings: dict[str, float] = {}
    source: Path | None = None  # the driving video it was made from (its sound goes into the output)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready dict (paths as strings)."""
        return self.model_dump(mode="json")


def _copy_driving(video: Path, out: Path, driving_fps=None) -> PoseResult:
    # an .mp4 is copied byte for byte (orientation, colour tags and timestamps with it): generation reads the copy
    # through the same decoder at the same driving_fps, so it takes the same frames the other stages took
    reader = open_video(video, driving_fps)
    info = reader.info
    if video.suffix.lower() == ".mp4":
        with atomic_path(out) as tmp:
            shutil.copyfile(video, tmp)
        backend = "copy"
        fps, frames = reader.fps, reader.frames
    else:  # e.g. a phone's .mov: re-encoded upright at the taken rate, streamed (a frame at a time)
        counted = [0]

        def each():
            for frame in reader:
                counted[0] += 1
                yield frame

        write_video(out, each(), reader.fps, lossless=bool(reader.height % 2 or reader.width % 2))
        backend, fps, frames = "reencode", reader.fps, counted[0]
    return PoseResult(
        rendered=out, fps=float(fps), frames=int(frames), backend=backend, width=info.width, height=info.height
    )


def _estimator(weights: PoseWeights, device: str, still: bool = False):
    if weights.has_dwpose:
        from scailflow.pose.dwpose import DWPose

        return DWPose(weights.dwpose_det, weights.dwpose_pose, device=device)
    from scailflow.pose.mediapipe_pose import MediaPipePose

    return MediaPipePose(video=not still)


def _reference_person(image_path: Path, weights: PoseWeights, device: str) -> PersonPose:
    image = read_image(image_path)
    people = _estimator(weights, device, still=True)(image[None])[0]
    people = [p for p in people if p.visible().sum() >= 2]
    if not people:
        raise InputError(f"no person found in the reference image {image_path} (needed for --align)")
    return max(people, key=lambda p: float((p.box[2] - p.box[0]) * (p.box[3] - p.box[1])))


def _mask_frame(ids: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Person ids (0 = nobody, i = person i) -> their colours on black."""
    out = np.zeros(ids.shape + (3,), np.uint8)
    on = ids > 0
    out[on] = colours[ids[on] - 1]
    return out


def _check_call(driving: str, palette: str, align: bool, reference_image: Path | None) -> None:
    """What the options cannot check alone (the options checked themselves when they were made)."""
    if driving not in DRIVING_MODES:
        raise InputError(f"driving must be one of {DRIVING_MODES}, got {driving!r}")
    if driving == "pose" and palette not in PALETTES:
        raise InputError(f"palette must be one of {PALETTES}, got {palette!r}")
    if driving == "pose" and align and reference_image is None:
        raise InputError("align needs a reference image")


def _track_people(frames: np.ndarray, path: Path, weights: PoseWeights, device: str, max_persons: int) -> list:
    """2D whole-body pose per frame, tracked into at most `max_persons` people (left to right)."""
    n_frames, height, width = frames.shape[:3]
    if weights.backend.startswith("mediapipe") and max_persons > 1:
        log.info("the embedded mediapipe model tracks a single person")
    tracks = track(_estimator(weights, device)(frames), width, height, max_persons)
    if not tracks:
        raise InputError(f"no person found in the driving video {path}")
    return tracks


def _lift_to_3d(frames: np.ndarray, tracks: list, weights: PoseWeights, tdev) -> bool:
    """NLF's 3D joints for every tracked person (when its model is configured); whether any person has them."""
    if weights.nlf is not None:
        from scailflow.pose.nlf import NLF

        nlf = NLF(weights.nlf, tdev)
        for people in tracks:
            boxes = [p.box if p.visible().any() and p.box is not None else None for p in people]
            joints = nlf.track_joints(frames, boxes)
            for p, j in zip(people, joints):
                p.joints3d = j if p.box is not None else None
    elif weights.backend == "dwpose-2d":
        log.info("no NLF model configured: 2D-only fallback (flat limbs from DWPose)")
    return any(p.joints3d is not None for people in tracks for p in people)


def _align(tracks: list, reference_image: Path, weights: PoseWeights, device: str, height: int, width: int):
    """Fit the skeleton to the reference's person: the alignment, and the tracks' 2D overlays moved with it."""
    ref = _reference_person(Path(reference_image), weights, device)
    first = next(p for p in tracks[0] if p.visible().sum() >= 2)
    alignment = fit_to_reference(ref, first, height, width)
    return alignment, [[apply_to_overlay(p, alignment, height, width) for p in people] for people in tracks]


def _body_frames(
    tracks: list, has3d: bool, alignment: Alignment | None, palette: str, shape: tuple[int, int, int], tdev
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The body per frame as (RGB, person ids - 1): 3D capsules when there are 3D joints, else flat 2D limbs."""
    n_frames, height, width = shape
    if has3d:
        joints = np.zeros((len(tracks), n_frames, N_JOINTS3D, 3), np.float32)
        for i, people in enumerate(tracks):
            for t, p in enumerate(people):
                if p.joints3d is not None:
                    joints[i, t] = p.joints3d
        camera = alignment.camera(height, width) if alignment else Camera.default(height, width)
        yield from Renderer(height, width, camera, tdev).render(build_capsules(joints, palette))
    else:
        for t in range(n_frames):
            yield draw_flat_limbs([people[t] for people in tracks], height, width, palette)


def _composited_frames(body, tracks: list, n_frames: int, colours: np.ndarray, masks: VideoWriter):
    """The body with each person's face/hand overlay on top; each frame's person-colour mask (the person under
    every pixel, overlays on top) goes to `masks` on the way, so neither video is held."""
    for t, (rgb, ids) in enumerate(iterate(body, "render", n_frames)):
        if t % TRIM_EVERY == 0:  # the render's freed buffers back to the system (see scailflow.heap)
            release_freed_memory()
        overlays = [draw_person_overlay(people[t], *rgb.shape[:2]) for people in tracks]
        mask_ids = (ids + 1).astype(np.uint8)
        for i, ov in enumerate(overlays):
            mask_ids[ov.any(-1)] = i + 1
        masks.write(_mask_frame(mask_ids, colours))
        yield composite(rgb, overlays)


def prepare_driving(
    driving_video: Path,
    out_dir: Path,
    opts: PoseOptions | None = None,
    *,
    driving: str = "end-to-end",
    reference_image: Path | None = None,
    max_persons: int = 2,
    weights: PoseWeights | None = None,
    device: str = "auto",
    palette: str = "v2",
    driving_fps: float | str | None = None,
) -> PoseResult:
    """Write out_dir/rendered_v2.mp4 (and in pose mode out_dir/rendered_mask_v2.mp4) for one driving video.

    end-to-end: a byte copy of an .mp4 driving video (else a re-encode). pose: the 3D capsule skeleton with the
    2D face/hand overlay at the driving size and fps, plus the flat person-colour mono render on black.
    `weights` default to the environment (PoseWeights.from_env) overridden by `opts`' files; with no DWPose files
    the embedded mediapipe model is used. `opts.align` fits the skeleton to the person in `reference_image`.
    `max_persons` is the job's `masks.max_persons` (MaskOptions checks it). `driving_fps` is sampling.driving_fps:
    the rate the driving video is taken at (scailflow.decode).
    """
    opts = PoseOptions() if opts is None else opts
    driving_video, out_dir = Path(driving_video), Path(out_dir)
    # 1. Check the call
    _check_call(driving, palette, opts.align, reference_image)
    if driving == "end-to-end":
        if opts.align:
            log.warning("align has no effect in end-to-end mode (the driving video is used as is)")
        return _copy_driving(driving_video, out_dir / RENDERED, driving_fps).model_copy(
            update={"source": driving_video}
        )

    if weights is None:
        weights = PoseWeights.from_env().overridden_by(PoseWeights.from_config(opts.model_dump()))
    weights.check()
    tdev = torch_device(device)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    # 2. The driving video, upright, BT.709, at the taken rate: decoded as each step walks it (2D pose, then 3D
    # joints once per person), never held whole
    frames = StreamedFrames(open_video(driving_video, driving_fps=driving_fps))
    fps = float(max(1, round(frames.reader.fps)))
    n_frames, height, width = frames.shape[:3]
    timings["read"], clock = time.perf_counter() - clock, time.perf_counter()

    # 3. 2D pose, tracked into people
    tracks = _track_people(frames, driving_video, weights, device, max_persons)
    timings["pose2d"], clock = time.perf_counter() - clock, time.perf_counter()

    # 4. 3D joints (NLF), when configured
    has3d = _lift_to_3d(frames, tracks, weights, tdev)
    timings["pose3d"] = time.perf_counter() - clock

    # 5. Fit the skeleton to the reference, when asked
    alignment: Alignment | None = None
    if opts.align:
        alignment, tracks = _align(tracks, Path(reference_image), weights, device, height, width)

    # 6. Render the skeleton, then its flat person-colour mask
    clock = time.perf_counter()
    n_persons = len(tracks)
    colours = np.array([person_colour(i, opts.legacy_mask_colours) for i in range(n_persons)], np.uint8)
    body = _body_frames(tracks, has3d, alignment, palette, (n_frames, height, width), tdev)
    rendered, mask_path = out_dir / RENDERED, out_dir / ANIMATION_MASK
    with VideoWriter(mask_path, fps, lossless=True) as masks:  # written beside the render, frame by frame
        composited = _composited_frames(body, tracks, n_frames, colours, masks)
        write_video(rendered, composited, fps, lossless=bool(height % 2 or width % 2))
    timings["render"] = time.perf_counter() - clock
    log.info(
        "pose render: %d frames %dx%d at %g fps, %d person(s), backend %s",
        n_frames,
        width,
        height,
        fps,
        n_persons,
        weights.backend + ("" if has3d else " (2D only)"),
    )
    return PoseResult(
        rendered=rendered,
        mask_render=mask_path,
        fps=fps,
        frames=n_frames,
        backend=weights.backend,
        width=width,
        height=height,
        persons=n_persons,
        alignment=alignment.to_dict() if alignment else None,
        timings=timings,
        source=driving_video,
    )
