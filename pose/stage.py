"""`prepare_driving`: the driving input of a SCAIL-2 job (end-to-end copy or pose-driven skeleton render)."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from scailflow.errors import InputError
from scailflow.files import atomic_path
from scailflow.media import open_video, read_image, read_video, write_video
from scailflow.options import DrivingMode, choices
from scailflow.pose.align import Alignment, apply_to_overlay, fit_to_reference
from scailflow.pose.options import Palette
from scailflow.pose.render2d import composite, draw_flat_limbs, draw_person_overlay
from scailflow.pose.render3d import Camera, Renderer, build_capsules
from scailflow.pose.runtime import torch_device
from scailflow.pose.skeleton import N_JOINTS3D, PERSON_COLOURS, PersonPose, person_colour
from scailflow.pose.tracker import track
from scailflow.pose.weights import PoseWeights
from scailflow.progress import iterate

log = logging.getLogger("scailflow.pose")

RENDERED = "rendered_v2.mp4"
MASK_RENDER = "rendered_mask_v2.mp4"
DRIVING_MODES = choices(DrivingMode)
PALETTES = choices(Palette)


def output_paths(out_dir: Path | str, driving: str = "end-to-end") -> list[Path]:
    """The files `prepare_driving` writes: the driving input, and in pose mode the skeleton's mask render."""
    return [Path(out_dir) / RENDERED] + ([Path(out_dir) / MASK_RENDER] if driving == "pose" else [])


@dataclass
class DrivingResult:
    """What prepare_driving wrote."""

    rendered: Path
    mask_render: Path | None
    fps: float
    frames: int
    backend: str
    width: int = 0
    height: int = 0
    persons: int = 0
    alignment: dict | None = None
    seconds: dict = field(default_factory=dict)
    source: Path | None = None  # the driving video it was made from (its sound goes into the output)

    def to_dict(self) -> dict:
        return {
            "source": None if self.source is None else str(self.source),
            "rendered": str(self.rendered),
            "mask_render": None if self.mask_render is None else str(self.mask_render),
            "fps": self.fps,
            "frames": self.frames,
            "backend": self.backend,
            "width": self.width,
            "height": self.height,
            "persons": self.persons,
            "alignment": self.alignment,
            "seconds": dict(self.seconds),
        }


def _copy_driving(video: Path, out: Path, driving_fps=None) -> DrivingResult:
    # an .mp4 is copied byte for byte (orientation, colour tags and timestamps with it): generation reads the copy
    # through the same decoder at the same driving_fps, so it takes the same frames the other stages took
    reader = open_video(video, driving_fps)
    info = reader.info
    if video.suffix.lower() == ".mp4":
        with atomic_path(out) as tmp:
            shutil.copyfile(video, tmp)
        backend = "copy"
        fps, frames = reader.fps, reader.frames
    else:
        frames_arr, fps = read_video(video, driving_fps=driving_fps)
        write_video(out, frames_arr, fps, lossless=bool(frames_arr.shape[1] % 2 or frames_arr.shape[2] % 2))
        backend, frames = "reencode", len(frames_arr)
    return DrivingResult(out, None, float(fps), int(frames), backend, info.width, info.height)


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


def _mask_frames(ids: np.ndarray, colours: np.ndarray) -> Iterator[np.ndarray]:
    for frame_ids in ids:
        out = np.zeros(frame_ids.shape + (3,), np.uint8)
        on = frame_ids > 0
        out[on] = colours[frame_ids[on] - 1]
        yield out


def prepare_driving(
    driving_video: Path,
    out_dir: Path,
    *,
    driving: str = "end-to-end",
    weights: PoseWeights | None = None,
    reference_image: Path | None = None,
    align: bool = False,
    max_persons: int = 2,
    device: str = "auto",
    legacy_mask_colours: bool = False,
    palette: str = "v2",
    driving_fps: float | str | None = None,
) -> DrivingResult:
    """Write out_dir/rendered_v2.mp4 (and in pose mode out_dir/rendered_mask_v2.mp4) for one driving video.

    end-to-end: a byte copy of an .mp4 driving video (else a re-encode). pose: the 3D capsule skeleton with the
    2D face/hand overlay at the driving size and fps, plus the flat person-colour mono render on black.
    `weights` default to the environment (PoseWeights.from_env); with no DWPose files the embedded mediapipe
    model is used. `align` fits the skeleton to the person in `reference_image`.
    """
    driving_video, out_dir = Path(driving_video), Path(out_dir)
    if driving not in DRIVING_MODES:
        raise InputError(f"driving must be one of {DRIVING_MODES}, got {driving!r}")
    if driving == "end-to-end":
        if align:
            log.warning("align has no effect in end-to-end mode (the driving video is used as is)")
        result = _copy_driving(driving_video, out_dir / RENDERED, driving_fps)
        result.source = driving_video
        return result

    if not 1 <= max_persons <= len(PERSON_COLOURS):
        raise InputError(f"max_persons must be 1..{len(PERSON_COLOURS)}, got {max_persons}")
    if palette not in PALETTES:
        raise InputError(f"palette must be one of {PALETTES}, got {palette!r}")
    if align and reference_image is None:
        raise InputError("align needs a reference image")
    weights = PoseWeights.from_env() if weights is None else weights
    weights.check()
    backend = weights.backend
    tdev = torch_device(device)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    frames, src_fps = read_video(driving_video, driving_fps=driving_fps)  # upright, BT.709, at the taken rate
    fps = float(max(1, round(src_fps)))
    n_frames, height, width = frames.shape[:3]
    seconds["read"] = time.perf_counter() - clock

    clock = time.perf_counter()
    estimator = _estimator(weights, device)
    if backend.startswith("mediapipe") and max_persons > 1:
        log.info("the embedded mediapipe model tracks a single person")
    detections = estimator(frames)
    tracks = track(detections, width, height, max_persons)
    if not tracks:
        raise InputError(f"no person found in the driving video {driving_video}")
    seconds["pose2d"] = time.perf_counter() - clock

    clock = time.perf_counter()
    if weights.nlf is not None:
        from scailflow.pose.nlf import NLF

        nlf = NLF(weights.nlf, tdev)
        for people in tracks:
            boxes = [p.box if p.visible().any() and p.box is not None else None for p in people]
            joints = nlf.track_joints(frames, boxes)
            for p, j in zip(people, joints):
                p.joints3d = j if p.box is not None else None
    elif backend == "dwpose-2d":
        log.info("no NLF model configured: 2D-only fallback (flat limbs from DWPose)")
    has3d = any(p.joints3d is not None for people in tracks for p in people)
    seconds["pose3d"] = time.perf_counter() - clock

    alignment: Alignment | None = None
    if align:
        ref = _reference_person(Path(reference_image), weights, device)
        first = next(p for p in tracks[0] if p.visible().sum() >= 2)
        alignment = fit_to_reference(ref, first, height, width)
        tracks = [[apply_to_overlay(p, alignment, height, width) for p in people] for people in tracks]

    clock = time.perf_counter()
    n_persons = len(tracks)
    colours = np.array([person_colour(i, legacy_mask_colours) for i in range(n_persons)], np.uint8)
    mask_ids = np.zeros((n_frames, height, width), np.uint8)

    def body_frames() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if has3d:
            joints = np.zeros((n_persons, n_frames, N_JOINTS3D, 3), np.float32)
            for i, people in enumerate(tracks):
                for t, p in enumerate(people):
                    if p.joints3d is not None:
                        joints[i, t] = p.joints3d
            camera = alignment.camera(height, width) if alignment else Camera.default(height, width)
            yield from Renderer(height, width, camera, tdev).render(build_capsules(joints, palette))
        else:
            for t in range(n_frames):
                yield draw_flat_limbs([people[t] for people in tracks], height, width, palette)

    def rendered_frames() -> Iterator[np.ndarray]:
        for t, (rgb, ids) in enumerate(iterate(body_frames(), "render", n_frames)):
            overlays = [draw_person_overlay(people[t], height, width) for people in tracks]
            mask_ids[t] = (ids + 1).astype(np.uint8)
            for i, ov in enumerate(overlays):
                mask_ids[t][ov.any(-1)] = i + 1
            yield composite(rgb, overlays)

    rendered = out_dir / RENDERED
    mask_path = out_dir / MASK_RENDER
    odd = bool(height % 2 or width % 2)
    write_video(rendered, rendered_frames(), fps, lossless=odd)
    seconds["render"] = time.perf_counter() - clock
    clock = time.perf_counter()
    write_video(mask_path, _mask_frames(mask_ids, colours), fps, lossless=True)
    seconds["mask_write"] = time.perf_counter() - clock
    log.info(
        "pose render: %d frames %dx%d at %g fps, %d person(s), backend %s",
        n_frames,
        width,
        height,
        fps,
        n_persons,
        backend + ("" if has3d else " (2D only)"),
    )
    return DrivingResult(
        rendered,
        mask_path,
        fps,
        n_frames,
        backend,
        width,
        height,
        n_persons,
        alignment.to_dict() if alignment else None,
        seconds,
        driving_video,
    )
