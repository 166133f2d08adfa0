"""The masks stage as one call: reference image + driving video -> SCAIL-2's coloured masks on disk."""

from __future__ import annotations

import itertools
import logging
import os
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from scailflow.decode import decode_budget
from scailflow.errors import InputError
from scailflow.files import make_dirs
from scailflow.layout import (
    BLACK,
    FITTED_REF,
    PERSON_COLOUR_NAMES,
    REF_MASK,
    WHITE,
    driving_mask_name,
    extra_ref_mask_name,
)
from scailflow.media import open_video, read_image, read_video, write_image
from scailflow.options import Mode, choices

from .errors import NoPersonError
from .framing import WARN_RATIO, alpha_mask, fit_reference, framing
from .options import MaskBackend, MaskOptions
from .palette import check_count
from .people import FaceDetector, split_people
from .render import colourise, palette_colours, write_label_video, write_mask_image
from .segmenters import MediapipeSegmenter, Sam2VideoSegmenter, Sam3VideoSegmenter, Segmentation, Segmenter
from .tracks import area_fraction, best_iou, dilate, left_to_right, masks_of, match_by_centroid, relabel, select_tracks

log = logging.getLogger("scailflow.masks")

MODES = choices(Mode)
BACKENDS = choices(MaskBackend)


class MaskResult(BaseModel):
    """What `make_masks` wrote. `colours[k]` names person k's colour (left to right in the first driving frame).
    Crosses the task boundary as is (Prefect persists it); `seconds` is the stage's own time, set by its task."""

    model_config = ConfigDict(frozen=True)

    ref_mask: Path
    driving_mask: Path
    extra_ref_masks: list[Path] = []
    persons: int = 0
    backend: str = ""
    mode: Mode = "animation"
    colours: list[str] = []
    ref_image: Path | None = None  # the reference generation should use when it is not the raw one (fitted)
    framing: dict | None = None  # replacement: reference vs replaced person's height in the model's frame
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings)."""
        return self.model_dump(mode="json")


def build_segmenter(
    backend: str = "auto",
    *,
    sam2_checkpoint: Path | None = None,
    sam2_config: str | None = None,
    sam3_checkpoint: Path | None = None,
    sam3_prompt: str = "human",
    device: str = "cpu",
) -> Segmenter:
    """The segmenter for `backend`. "auto": SAM 3 when its checkpoint is given (the official preprocessing's model),
    else SAM 2 when its checkpoint is given, else the embedded mediapipe default."""
    if backend not in BACKENDS:
        raise InputError(f"unknown masks backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend == "auto":
        backend = "sam3" if sam3_checkpoint is not None else "sam2" if sam2_checkpoint is not None else "mediapipe"
        if backend == "mediapipe":
            log.info(
                "masks: no SAM 2 checkpoint (nor SAM 3) configured; using the embedded mediapipe segmentation "
                "(people split by its face detector, tracked frame to frame)"
            )
    if backend == "mediapipe":
        return MediapipeSegmenter()
    if backend == "sam2":
        if sam2_checkpoint is None:
            raise InputError("the sam2 backend needs a checkpoint (e.g. sam2.1_hiera_large.pt); none configured")
        seg = Sam2VideoSegmenter.from_checkpoint(Path(sam2_checkpoint), sam2_config, device)
        log.info("masks: SAM 2 video predictor from %s on %s", sam2_checkpoint, device)
        return seg
    if sam3_checkpoint is None:
        raise InputError("the sam3 backend needs a checkpoint (sam3.pt); none configured")
    if device == "cpu":
        import torch

        device = "cuda" if torch.cuda.is_available() else device  # SAM 3 needs the GPU
    seg3 = Sam3VideoSegmenter.from_checkpoint(Path(sam3_checkpoint), device, prompt=sam3_prompt)
    log.info("masks: SAM 3 video model from %s on %s, text prompt %r", sam3_checkpoint, device, sam3_prompt)
    return seg3


def _pixel_boxes(boxes: Sequence[Any], width: int, height: int) -> list[tuple[float, float, float, float]]:
    """Person boxes as (x0, y0, x1, y1) pixels; boxes whose numbers are all <= 1.5 are taken as fractions."""
    out = []
    for b in boxes:
        if isinstance(b, dict):
            b = b.get("box", b.get("bbox"))
        try:
            x0, y0, x1, y1 = (float(v) for v in list(b)[:4])
        except (TypeError, ValueError):
            raise InputError(f"person box {b!r} is not (x0, y0, x1, y1)") from None
        if max(abs(x0), abs(y0), abs(x1), abs(y1)) <= 1.5:
            x0, x1, y0, y1 = x0 * width, x1 * width, y0 * height, y1 * height
        if not (x1 > x0 and y1 > y0):
            raise InputError(f"person box {b!r} is empty (need x1 > x0 and y1 > y0)")
        out.append((x0, y0, x1, y1))
    return out


def _boxes_for(segmenter: Segmenter, frame: np.ndarray, given: Sequence[Any] | None, what: str):
    """Prompt boxes for box-prompted backends: the caller's (pose detector) boxes, else mediapipe's."""
    if not isinstance(segmenter, Sam2VideoSegmenter):
        return None
    if given:
        return _pixel_boxes(given, frame.shape[1], frame.shape[0])
    boxes = MediapipeSegmenter().person_boxes(frame)
    log.info("masks: %d person boxes for %s from the embedded mediapipe segmentation", len(boxes), what)
    return boxes


def _segment_image(segmenter: Segmenter, image: np.ndarray, max_persons: int, boxes) -> Segmentation:
    def select(first):
        return left_to_right(first, select_tracks(first, max_persons))

    return segmenter.segment(image[None], select, boxes)


def _segment_alpha(alpha: np.ndarray, image: np.ndarray, max_persons: int) -> Segmentation:
    """The reference's own alpha as its people (split by faces like the embedded default's foreground)."""
    with FaceDetector().session() as detect:
        people = split_people(alpha, detect(image))
    kept = left_to_right(people, select_tracks(people, max_persons))
    labels = np.zeros((1, *alpha.shape), np.uint8)
    for p, i in enumerate(kept):
        labels[0][people[i]] = p + 1
    return Segmentation(labels, len(kept), len(people))


def _parse_extra(kind: str, persons: int, path: Path) -> int | None:
    """None for a background reference, else the character index."""
    if kind == "background":
        return None
    if kind.startswith("character:"):
        try:
            index = int(kind.split(":", 1)[1])
        except ValueError:
            index = -1
        if 0 <= index < persons:
            return index
        raise InputError(
            f"extra reference {path}: {kind!r} names no character (there are {persons}: "
            f"character:0 .. character:{persons - 1}, left to right)"
        )
    raise InputError(f"extra reference {path}: kind {kind!r} is neither 'background' nor 'character:<index>'")


def _check_call(mode: str, opts: MaskOptions) -> None:
    """What the options cannot check alone: the mode, and options that mean nothing in it."""
    if mode not in MODES:
        raise InputError(f"unknown masks mode {mode!r} (choose from {', '.join(MODES)})")
    if mode == "animation" and opts.replace_index is not None:
        log.warning("masks: replace_index is used in replacement mode only; ignored")
    if mode == "animation" and opts.dilate_px:
        log.warning("masks: dilate_px applies to the replacement mask only; ignored in animation mode")


def _segmenter_for(opts: MaskOptions, device: str) -> Segmenter:
    return build_segmenter(
        opts.backend,
        sam2_checkpoint=Path(opts.sam2_checkpoint) if opts.sam2_checkpoint else None,
        sam2_config=opts.sam2_config,
        sam3_checkpoint=Path(opts.sam3_checkpoint) if opts.sam3_checkpoint else None,
        sam3_prompt=opts.sam3_prompt,
        device=device,
    )


def _segment_reference(seg: Segmenter, path: Path, image: np.ndarray, cap: int, boxes: list | None) -> Segmentation:
    """The reference's people (at most `cap`): its own alpha when it has one and the segmenter is the embedded
    default, else the segmenter's."""
    alpha = alpha_mask(path) if isinstance(seg, MediapipeSegmenter) else None
    if alpha is not None:
        log.info("masks: the reference %s has transparency: its alpha channel is its mask", path.name)
        found = _segment_alpha(alpha, image, cap)
    else:
        found = _segment_image(seg, image, cap, _boxes_for(seg, image, boxes, "the reference"))
    if found.count == 0:
        raise NoPersonError(f"no person found in the reference image {path}")
    return found


def pick_animated(
    first: Sequence[np.ndarray], ref_masks: list[np.ndarray], max_persons: int, ref_colour_of: dict[int, int]
) -> list[int]:
    """Animation's driving tracks: up to `max_persons`, left to right; when the reference shows fewer people, those
    nearest (normalised centroid) to a reference person. Fills `ref_colour_of` (reference person -> colour)."""
    cand = left_to_right(first, select_tracks(first, max_persons))
    if not cand:
        return []
    refs = list(range(len(ref_masks)))
    if len(refs) > len(cand):  # keep the largest reference people, at most one per track
        refs = sorted(sorted(refs, key=lambda i: -area_fraction(ref_masks[i]))[: len(cand)])
    if len(refs) == len(cand):
        pairs = dict(zip(refs, range(len(cand))))
    else:
        matched = match_by_centroid([ref_masks[i] for i in refs], [first[c] for c in cand])
        pairs = {refs[i]: j for i, j in matched.items()}
    kept = sorted(pairs.values())
    check_count(len(kept))
    ref_colour_of.update({i: kept.index(j) for i, j in pairs.items()})
    if len(kept) < len(cand):
        log.info(
            "masks: %d of %d driving tracks matched to the %d reference people; the rest stay black",
            len(kept),
            len(cand),
            len(refs),
        )
    return [cand[j] for j in kept]


def pick_replaced(
    first: Sequence[np.ndarray],
    ref_masks: list[np.ndarray],
    opts: MaskOptions,
    driving_video: Path,
    ref_colour_of: dict[int, int],
) -> list[int]:
    """Replacement's one driving track: `opts.replace_index` (left to right), else the only one, else the best
    first-frame IoU with the reference mask."""
    cand = left_to_right(first, select_tracks(first, opts.max_persons))
    if not cand:
        return []
    if opts.replace_index is not None:
        if opts.replace_index >= len(cand):
            raise InputError(
                f"replace_index {opts.replace_index} but the driving video {driving_video} has "
                f"{len(cand)} tracked people (0..{len(cand) - 1}, left to right)"
            )
        chosen = opts.replace_index
    elif len(cand) == 1:
        chosen = 0
    else:
        chosen = best_iou(ref_masks[0], [first[c] for c in cand])
        log.info("masks: replacing person %d of %d (best first-frame IoU with the reference mask)", chosen, len(cand))
    ref_colour_of[0] = 0
    return [cand[chosen]]


def _segment_driving(seg: Segmenter, frames: np.ndarray, path: Path, select, boxes: list | None) -> Segmentation:
    found = seg.segment(frames, select, _boxes_for(seg, frames[0], boxes, "the driving video"))
    if found.count == 0:
        raise NoPersonError(f"no person found in the driving video {path}")
    if found.labels.shape[0] != frames.shape[0]:
        raise RuntimeError(f"segmenter returned {found.labels.shape[0]} frames for {frames.shape[0]}")
    return found


def _check_window(reader, seg: Sam2VideoSegmenter) -> None:
    """A clip tracked window by window holds one window: its frames at the video's size and, in the predictor,
    at the model's square size as float32. Refused up front when that is more than half this machine's memory."""
    s = int(seg.predictor.image_size)
    need = seg.window * (reader.width * reader.height * 3 + s * s * 3 * 4)
    if need > decode_budget():
        raise InputError(
            f"{reader.path}: one SAM 2 window of {seg.window} frames of {reader.width}x{reader.height} needs "
            f"{need / 2**30:.1f} GiB, more than half this machine's memory ({decode_budget() / 2**30:.1f} GiB): "
            "downscale the video"
        )
    log.info("masks: SAM 2 tracks the %d frames %d at a time", reader.frames, seg.window)


def _frame_reference(
    ref: np.ndarray, ref_labels: np.ndarray, first_labels: np.ndarray, fit: bool, out_dir: Path
) -> tuple[np.ndarray, Path | None, dict | None]:
    """Replacement: the reference character's height against the replaced person's (warn past WARN_RATIO); with
    `fit`, write the reference scaled to match (`ref_fitted.png`) and move its labels with it."""
    framed = framing(ref_labels > 0, first_labels > 0)
    if framed and not 1 / WARN_RATIO <= framed["ratio"] <= WARN_RATIO and not fit:
        log.warning(
            "masks: the reference character stands %.2fx as tall as the person replaced (%.0f%% vs %.0f%% of the "
            "frame): SCAIL-2 follows the reference's size; set masks.fit_reference: true (--fit-reference) "
            "to scale the reference to match",
            framed["ratio"],
            100 * framed["reference_height_share"],
            100 * framed["driving_height_share"],
        )
    if not (framed and fit):
        return ref_labels, None, framed
    fitted, ref_labels = fit_reference(ref, ref_labels, 1.0 / framed["ratio"])
    fitted_path = write_image(out_dir / FITTED_REF, fitted)
    framed["fitted"] = True
    log.info("masks: reference scaled by %.3f to the replaced person's size -> %s", 1 / framed["ratio"], FITTED_REF)
    return ref_labels, fitted_path, framed


def _write_masks(
    out_dir: Path,
    mode: str,
    ref_labels: np.ndarray,
    drv_labels: Iterable[np.ndarray],
    colours,
    dilate_px: int,
    fps: float,
) -> tuple[Path, Path]:
    """Animation: people in colour on white / on black. Replacement: the person on black / the replaced region
    (grown by `dilate_px`) in colour on white."""
    ref_path, drv_path = out_dir / REF_MASK, out_dir / driving_mask_name(mode)
    if mode == "animation":
        write_mask_image(ref_path, colourise(ref_labels, colours, WHITE))
        write_label_video(drv_path, drv_labels, colours, BLACK, fps)
    else:
        write_mask_image(ref_path, colourise(ref_labels, colours, BLACK))
        write_label_video(drv_path, (dilate(labels, dilate_px) for labels in drv_labels), colours, WHITE, fps)
    return ref_path, drv_path


def make_masks(
    ref_image: Path,
    driving_video: Path,
    out_dir: Path,
    opts: MaskOptions | None = None,
    *,
    mode: str = "animation",
    extra_refs: Sequence[tuple[Path, str]] = (),
    device: str = "cpu",
    person_boxes: list | None = None,
    ref_person_boxes: list | None = None,
    segmenter: Segmenter | None = None,
    driving_fps: float | str | None = None,
) -> MaskResult:
    """Segment and track the people, colour them and write SCAIL-2's masks into `out_dir`.

    Animation: `ref_mask.png` (people in colour on white) and `rendered_mask_v2.mp4` (the same colours on black).
    Replacement: `ref_mask.png` (the person on black) and `replace_mask.mp4` (the person to replace in colour on
    white, grown by `opts.dilate_px`); the person is `opts.replace_index` (0-based, left to right) or the best
    first-frame IoU with the reference mask. Colours follow the palette in left-to-right order of the first driving
    frame; when the reference shows fewer people, they are matched to driving tracks by nearest normalised centroid
    and unmatched tracks are left out. `person_boxes` / `ref_person_boxes` are (x0, y0, x1, y1) boxes in the first
    driving frame / the reference (pixels, or fractions of the size) that prompt SAM 2; without them mediapipe
    proposes boxes. `extra_refs` holds (image, "background" | "character:<index>") pairs. `segmenter` overrides
    `opts.backend`. `driving_fps` is sampling.driving_fps: the rate the driving video is taken at (scailflow.decode).

    A reference with transparency (PNG alpha) gives its own mask when the segmenter is the embedded default.
    Replacement mode compares the reference character's height with the replaced person's in the first driving
    frame (as the model sees them) and warns past 1.25x; `opts.fit_reference` writes `ref_fitted.png`, the reference
    scaled so they match, with its mask moved with it (`MaskResult.ref_image`).
    """
    opts = MaskOptions() if opts is None else opts
    ref_image, driving_video, out_dir = Path(ref_image), Path(driving_video), Path(out_dir)
    # 1. Check the call (the options checked themselves when they were made)
    _check_call(mode, opts)

    # 2. Read the inputs, build the segmenter
    ref = read_image(ref_image)
    seg = segmenter if segmenter is not None else _segmenter_for(opts, device)
    # upright, BT.709, at sampling.driving_fps; a segmenter that tracks frame by frame (mediapipe) gets them one at
    # a time, SAM 2 a window at a time on a clip longer than its window, and their labels are written as they come
    # (memory does not grow with the clip); SAM 3, and SAM 2 on a clip within one window, take the whole clip
    reader = open_video(driving_video, driving_fps=driving_fps)
    fps = reader.fps
    streamed = hasattr(seg, "stream")
    windowed = isinstance(seg, Sam2VideoSegmenter) and reader.frames > seg.window
    if windowed:
        _check_window(reader, seg)
    frames = None if streamed or windowed else read_video(driving_video, driving_fps=driving_fps)[0]

    # 3. The reference's people first: the driving selector needs them to match people and pick the one to replace
    ref_seg = _segment_reference(seg, ref_image, ref, opts.max_persons if mode == "animation" else 1, ref_person_boxes)
    ref_masks = masks_of(ref_seg.labels[0], ref_seg.count)

    # 4. Track the driving video's people, matched to the reference's (which fixes each one's colour)
    ref_colour_of: dict[int, int] = {}  # reference person -> colour index, filled by the selector
    if mode == "animation":
        select = partial(pick_animated, ref_masks=ref_masks, max_persons=opts.max_persons, ref_colour_of=ref_colour_of)
    else:
        select = partial(
            pick_replaced, ref_masks=ref_masks, opts=opts, driving_video=driving_video, ref_colour_of=ref_colour_of
        )
    if streamed:
        tracked = seg.stream(iter(reader), reader.frames, select)
        drv_seg = next(tracked)
        if drv_seg.count == 0:
            raise NoPersonError(f"no person found in the driving video {driving_video}")
        drv_labels = itertools.chain([drv_seg.labels[0]], tracked)
    elif windowed:
        windows = reader.windows(seg.window, overlap=1)  # each window starts on the previous one's last frame
        first = next(windows)
        boxes = _boxes_for(seg, first[0], person_boxes, "the driving video")
        tracked = seg.track_windows(itertools.chain([first], windows), reader.frames, select, boxes)
        del first
        drv_seg = next(tracked)
        if drv_seg.count == 0:
            raise NoPersonError(f"no person found in the driving video {driving_video}")
        drv_labels = itertools.chain(drv_seg.labels, tracked)
    else:
        drv_seg = _segment_driving(seg, frames, driving_video, select, person_boxes)
        drv_labels = drv_seg.labels
    persons = drv_seg.count
    colours = palette_colours(persons)
    ref_labels = relabel(ref_seg.labels[0], ref_colour_of)
    make_dirs(out_dir)

    # 5. Replacement: the reference's size against the replaced person's (and, asked, fitted to it)
    fitted_path, framed = None, None
    if mode == "replacement":
        ref_labels, fitted_path, framed = _frame_reference(
            ref, ref_labels, drv_seg.labels[0], opts.fit_reference, out_dir
        )

    # 6. Write the reference and driving masks
    ref_path, drv_path = _write_masks(out_dir, mode, ref_labels, drv_labels, colours, opts.dilate_px, fps)
    log.info(
        "masks: %s mode, %d %s (%s), backend %s -> %s, %s",
        mode,
        persons,
        "person" if persons == 1 else "people",
        ", ".join(PERSON_COLOUR_NAMES[:persons]),
        seg.name,
        ref_path.name,
        drv_path.name,
    )

    # 7. The extra references' masks, in the colours just assigned
    extra_paths = [
        _extra_mask(seg, Path(p), kind, persons, colours, extra_mask_path(out_dir, n))
        for n, (p, kind) in enumerate(extra_refs)
    ]
    return MaskResult(
        ref_mask=ref_path,
        driving_mask=drv_path,
        extra_ref_masks=extra_paths,
        persons=persons,
        backend=seg.name,
        mode=mode,
        colours=list(PERSON_COLOUR_NAMES[:persons]),
        ref_image=fitted_path,
        framing=framed,
    )


def _extra_mask(seg: Segmenter, path: Path, kind: str, persons: int, colours, out: Path) -> Path:
    from .render import valid_area

    index = _parse_extra(kind, persons, path)
    image = read_image(path)
    if index is None:
        valid = valid_area(path, image)
        return write_mask_image(out, np.repeat(np.where(valid, 255, 0).astype(np.uint8)[..., None], 3, axis=-1))
    found = _segment_image(seg, image, 1, _boxes_for(seg, image, None, str(path)))
    if found.count == 0:
        raise NoPersonError(f"no person found in the extra reference image {path}")
    return write_mask_image(out, colourise(found.labels[0], [colours[index]], BLACK))


def output_paths(out_dir: str | os.PathLike, mode: str = "animation", extra_refs: int = 0) -> list[Path]:
    """The files `make_masks` writes in `out_dir` for `mode`: reference mask, driving mask, extra reference masks."""
    if mode not in MODES:
        raise InputError(f"unknown masks mode {mode!r} (choose from {', '.join(MODES)})")
    out = Path(out_dir)
    return [out / REF_MASK, out / driving_mask_name(mode), *(extra_mask_path(out, n) for n in range(extra_refs))]


def extra_mask_path(out_dir: Path, n: int) -> Path:
    return out_dir / extra_ref_mask_name(n)
