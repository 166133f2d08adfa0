"""Person segmentation and tracking backends.

Every backend implements `segment(frames, select, boxes=None) -> Segmentation`: it finds candidate people on
the first frame, asks `select` which to keep (and in which order), and tracks only those through the clip.
People appearing after the first frame are never added. Backends:

- `MediapipeSegmenter`: the embedded default (mediapipe selfie segmentation and face detection, models inside the
  wheel): the foreground split into people, one per face, tracked frame to frame (masks/people.py); it also
  proposes person boxes for SAM 2 prompts.
- `Sam2VideoSegmenter`: SAM 2 video predictor prompted with one box per person on the first frame; a clip longer
  than its window (`SAM2_WINDOW`) is tracked window by window (`track_windows`).
- `Sam3VideoSegmenter`: SAM 3's video model prompted with text ("human"), with the `scailflow[sam3]` extra.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, Sequence

import cv2
import numpy as np

from scailflow.errors import InputError
from scailflow.native import import_native
from scailflow.progress import report

from .options import SAM2_CONFIGS
from .people import TRACK_SIDE, FaceDetector, WorkScale, split_people, track_people
from .tracks import MIN_AREA_FRACTION, Selector, compose_labels

log = logging.getLogger("scailflow.masks")

Box = Sequence[float]  # (x0, y0, x1, y1) in pixels of the frame


@dataclass
class Segmentation:
    """Tracked people: `labels` uint8 [T, H, W] (0 = nobody, k + 1 = person k in the selector's order)."""

    labels: np.ndarray
    count: int
    candidates: int  # first-frame candidates before selection


class Segmenter(Protocol):
    name: str

    def segment(self, frames: np.ndarray, select: Selector, boxes: Sequence[Box] | None = None) -> Segmentation: ...


def _empty(frames: np.ndarray, candidates: int) -> Segmentation:
    return Segmentation(np.zeros(frames.shape[:3], np.uint8), 0, candidates)


class MediapipeSegmenter:
    """Embedded default: mediapipe selfie segmentation on every frame; the foreground is split into people by
    mediapipe's face detector and tracked through the clip (masks/people.py; both models ship inside the wheel)."""

    name = "mediapipe"

    def __init__(self, model_selection: int = 0, track_side: int | None = TRACK_SIDE):
        self.model_selection = model_selection
        self.track_side = track_side  # several people are split and tracked at this long side (people.TRACK_SIDE)

    @contextlib.contextmanager
    def _model(self):
        # one import at a time (scailflow/native.py): two stages importing mediapipe at once can deadlock
        SelfieSegmentation = import_native("mediapipe.python.solutions.selfie_segmentation").SelfieSegmentation

        with SelfieSegmentation(model_selection=self.model_selection) as model:
            yield model

    def probabilities(self, frames: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
        """Foreground probability float32 [H, W] in [0, 1] for each RGB uint8 frame."""
        with self._model() as model:
            for frame in frames:
                result = model.process(np.ascontiguousarray(frame))
                yield np.asarray(result.segmentation_mask, dtype=np.float32)

    def foreground(self, frame: np.ndarray) -> np.ndarray:
        """Boolean foreground mask of one RGB frame (probability > 0.5)."""
        return next(iter(self.probabilities([frame]))) > 0.5

    def people(self, frame: np.ndarray) -> list[np.ndarray]:
        """One boolean mask per person in one frame (foreground regions, split where several faces share one)."""
        with FaceDetector().session() as detect:
            return split_people(self.foreground(frame), detect(frame))

    def person_boxes(self, frame: np.ndarray, min_area: float = MIN_AREA_FRACTION) -> list[tuple[int, int, int, int]]:
        """Boxes (x0, y0, x1, y1) of the people in a frame covering >= `min_area` of it, largest first (SAM 2's
        prompts when no pose detector gave boxes)."""
        boxes = []
        for m in self.people(frame):
            if m.mean() >= min_area:
                ys, xs = np.nonzero(m)
                boxes.append((int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())))
        return sorted(boxes, key=lambda b: -(b[2] - b[0] + 1) * (b[3] - b[1] + 1))

    def segment(self, frames: np.ndarray, select: Selector, boxes: Sequence[Box] | None = None) -> Segmentation:
        if boxes:
            log.debug("mediapipe finds people itself; %d prompt boxes unused", len(boxes))
        tracked = self.stream(iter(frames), len(frames), select)
        head = next(tracked)
        if head.count == 0:
            return _empty(frames, head.candidates)
        labels = np.zeros(frames.shape[:3], np.uint8)
        labels[0] = head.labels[0]
        for t, frame_labels in enumerate(tracked, start=1):
            labels[t] = frame_labels
        return Segmentation(labels, head.count, head.candidates)

    def stream(self, frames: Iterable[np.ndarray], total: int, select: Selector) -> Iterable:
        """`segment` one frame at a time, for a clip too long to hold: the first item is the first frame's
        Segmentation ([1, H, W] labels, the people kept, the candidates), then each later frame's labels [H, W]
        as its frame comes (nothing when nobody was kept). Holds one frame."""
        frames = iter(frames)
        frame0 = next(frames)
        scale = WorkScale(frame0.shape, self.track_side)
        with self._model() as model, FaceDetector().session() as detect:

            def probability(frame: np.ndarray) -> np.ndarray:
                return np.asarray(model.process(np.ascontiguousarray(frame)).segmentation_mask, np.float32)

            prob0 = probability(frame0)
            first = prob0 > 0.5
            # people are told apart at the working size; one person is the whole full-size foreground
            small = split_people(scale.probability(prob0), scale.boxes(detect(frame0)))
            candidates = [scale.labels(m.astype(np.uint8), first) > 0 for m in small]
            kept = select(candidates)
            if not kept:
                yield Segmentation(np.zeros((1, *frame0.shape[:2]), np.uint8), 0, len(candidates))
                return
            single = len(candidates) == 1  # one person: the whole foreground, frame by frame
            people = small  # every candidate is tracked, so the ones not kept never leak into the kept

            def labelled(people, foreground: np.ndarray) -> np.ndarray:
                out = np.zeros(people[0].shape, np.uint8)
                for p, i in enumerate(kept):
                    out[people[i]] = p + 1
                return scale.labels(out, foreground)

            yield Segmentation(
                (first if single else labelled(people, first)).astype(np.uint8)[None],
                1 if single else len(kept),
                len(candidates),
            )
            report("track", 1, total)
            for t, frame in enumerate(frames, start=1):
                prob = probability(frame)
                if single:
                    yield (prob > 0.5).astype(np.uint8)
                else:
                    people = track_people(people, scale.probability(prob), scale.boxes(detect(frame)))
                    yield labelled(people, prob > 0.5)
                report("track", t + 1, total)


_SAM2_SIZES = (
    ("large", "l"),
    ("base_plus", "b+"),
    ("base-plus", "b+"),
    ("b+", "b+"),
    ("small", "s"),
    ("tiny", "t"),
    ("_l", "l"),
    ("_s", "s"),
    ("_t", "t"),
)


def sam2_config_for(checkpoint: Path) -> str:
    """The bundled SAM 2 config matching a checkpoint's file name (e.g. sam2.1_hiera_large.pt)."""
    name = Path(checkpoint).name.lower()
    version = "sam2.1" if re.search(r"sam2\.1|sam2_1|sam21", name) else "sam2"
    stem = Path(name).stem
    for key, size in _SAM2_SIZES:
        if key in stem:
            return f"configs/{version}/{version}_hiera_{size}.yaml"
    raise InputError(
        f"cannot tell the SAM 2 model size from {checkpoint}; give sam2_config (one of {', '.join(SAM2_CONFIGS)})"
    )


SAM2_WINDOW = 128  # frames the SAM 2 predictor is given at once; a longer clip is tracked window by window


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


class Sam2VideoSegmenter:
    """SAM 2 video predictor prompted with first-frame person boxes.

    `predictor` is anything with the SAM 2 video predictor's interface (`image_size`, `init_state`,
    `add_new_points_or_box`, `propagate_in_video`, `reset_state`; `add_new_mask` for clips longer than a window).
    Frames are resized to the model's square input and written as a JPEG folder (the predictor's input format); mask
    logits come back at that size and are resized to the frame size, then thresholded at probability 0.5.

    A clip longer than `window` frames is tracked a window at a time (`track_windows`, which the masks stage uses):
    the predictor loads every frame it is given as a float tensor at its square size (about 12 MB a frame at
    1024 px), so a whole long clip would not fit.
    """

    name = "sam2"

    def __init__(self, predictor: Any, device: str = "cpu", window: int = SAM2_WINDOW):
        if window < 2:
            raise ValueError(
                f"a SAM 2 window holds at least 2 frames (one is the previous window's last), got {window}"
            )
        self.predictor = predictor
        self.device = device
        self.window = window

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Path | None, config: str | None = None, device: str = "cpu", image_size: int | None = None
    ) -> Sam2VideoSegmenter:
        """Build the predictor from a bundled config (inferred from the checkpoint name when not given).

        `checkpoint=None` keeps random weights (tests only). `image_size` overrides the config's input size.
        """
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise InputError(f"SAM 2 checkpoint not found: {checkpoint}")
        if config is None:
            if checkpoint is None:
                raise InputError("SAM 2 needs a checkpoint or a config")
            config = sam2_config_for(Path(checkpoint))
        if config not in SAM2_CONFIGS:  # Hydra instantiates a config's `_target_`s: only the bundled ones, never a path
            raise InputError(f"unknown SAM 2 config {config!r}: choose one of {', '.join(SAM2_CONFIGS)}")
        build_sam2_video_predictor = import_native("sam2.build_sam").build_sam2_video_predictor

        overrides = [
            "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
            "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
            "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
            "++model.binarize_mask_from_pts_for_mem_enc=true",
            # hole filling needs sam2's optional CUDA extension; without it sam2 warns on every frame
            f"++model.fill_hole_area={8 if _sam2_has_extension() else 0}",
        ]
        if image_size is not None:
            overrides.append(f"++model.image_size={int(image_size)}")
        try:
            predictor = build_sam2_video_predictor(
                config,
                ckpt_path=str(checkpoint) if checkpoint else None,
                device=device,
                hydra_overrides_extra=overrides,
                apply_postprocessing=False,
            )
        except (RuntimeError, KeyError, OSError) as e:
            raise InputError(f"cannot load SAM 2 from {checkpoint} with {config}: {e}") from None
        return cls(predictor, device)

    def _autocast(self):
        if str(self.device).startswith("cuda"):
            import torch

            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _to_frame(self, logits: Any, size: tuple[int, int]) -> np.ndarray:
        """Logits [K, 1, s, s] at model size -> probabilities [K, H, W] at frame size."""
        arr = _to_numpy(logits)
        arr = arr.reshape(arr.shape[0], arr.shape[-2], arr.shape[-1])
        h, w = size
        out = np.empty((arr.shape[0], h, w), np.float32)
        for k in range(arr.shape[0]):
            out[k] = cv2.resize(arr[k], (w, h), interpolation=cv2.INTER_LINEAR)
        return _sigmoid(out)

    def _write_frames(self, frames: np.ndarray, folder: str) -> None:
        """The frames at the model's square size as the predictor's JPEG folder (0.jpg, 1.jpg, ...)."""
        from PIL import Image

        s = int(self.predictor.image_size)
        for i, frame in enumerate(frames):
            small = cv2.resize(frame, (s, s), interpolation=cv2.INTER_AREA)
            Image.fromarray(small).save(Path(folder) / f"{i}.jpg", quality=95)

    def _propagate(self, state: Any, person_of: dict[int, int], size: tuple[int, int]):
        """(frame index, labels [H, W], {obj_id: logits [s, s]}) for each frame the predictor tracks."""
        h, w = size
        for frame_idx, obj_ids, frame_logits in self.predictor.propagate_in_video(state):
            probs = self._to_frame(frame_logits, (h, w))
            ordered = np.zeros((len(person_of), h, w), np.float32)
            for k, obj_id in enumerate(obj_ids):
                if obj_id in person_of:
                    ordered[person_of[obj_id]] = probs[k]
            logits = _to_numpy(frame_logits)
            yield (
                frame_idx,
                compose_labels(ordered),
                {int(o): logits[k].reshape(logits.shape[-2:]) for k, o in enumerate(obj_ids)},
            )

    def segment(self, frames: np.ndarray, select: Selector, boxes: Sequence[Box] | None = None) -> Segmentation:
        return self._track_first(frames, select, boxes, len(frames))[0]

    def _track_first(
        self, frames: np.ndarray, select: Selector, boxes: Sequence[Box] | None, total: int
    ) -> tuple[Segmentation, dict[int, int], dict[int, np.ndarray]]:
        """Track the box-prompted people through `frames`: their Segmentation, obj_id -> person, and the tracked
        objects' last-frame logits at model size. `total` is the clip's length, for the progress."""
        boxes = list(boxes or [])
        if not boxes:
            return _empty(frames, 0), {}, {}
        t, h, w = frames.shape[:3]
        s = int(self.predictor.image_size)
        scale = np.array([s / w, s / h, s / w, s / h], np.float32)
        model_boxes = [np.asarray(b[:4], np.float32) * scale for b in boxes]

        with tempfile.TemporaryDirectory(prefix="scailflow-sam2-") as tmp, self._autocast():
            self._write_frames(frames, tmp)
            state = self.predictor.init_state(tmp, offload_video_to_cpu=True)
            logits = None
            for i, box in enumerate(model_boxes):
                _, _, logits = self.predictor.add_new_points_or_box(state, frame_idx=0, obj_id=i + 1, box=box)
            first = self._to_frame(logits, (h, w)) > 0.5
            kept = select(list(first))
            if not kept:
                return _empty(frames, len(boxes)), {}, {}
            if sorted(kept) != list(range(len(boxes))):
                # drop the unkept objects before tracking: propagation cost grows with the object count
                self.predictor.reset_state(state)
                for _person, i in enumerate(kept):
                    self.predictor.add_new_points_or_box(state, frame_idx=0, obj_id=i + 1, box=model_boxes[i])
            # obj_id i + 1 (box i) becomes person kept.index(i)
            person_of = {i + 1: p for p, i in enumerate(kept)}
            labels = np.zeros((t, h, w), np.uint8)
            last: dict[int, np.ndarray] = {}
            done = 0
            report("track", 0, total)
            for frame_idx, frame_labels, frame_logits in self._propagate(state, person_of, (h, w)):
                labels[frame_idx] = frame_labels
                if frame_idx == t - 1:
                    last = frame_logits
                done += 1
                report("track", done, total)
        return Segmentation(labels, len(kept), len(boxes)), person_of, last

    def track_windows(
        self, windows: Iterable[np.ndarray], total: int, select: Selector, boxes: Sequence[Box] | None = None
    ) -> Iterator:
        """`segment` for a clip too long to hold, one window of frames at a time (`reader.windows(n, overlap=1)`:
        each window starts on the previous one's last frame). The first window is tracked as `segment` tracks a
        clip; each later one gets a fresh predictor state prompted on its first frame (the previous window's last)
        with the masks the people had there (`add_new_mask`), under the same object ids, so each person keeps their
        colour. A person whose mask is empty at the end of a window stays lost (never prompted again). The first
        item is the first window's Segmentation, then each later frame's labels [H, W] as its window is tracked
        (nothing more when nobody was kept). Holds one window."""
        windows = iter(windows)
        frames = next(windows)
        head, person_of, live = self._track_first(frames, select, boxes, total)
        h, w = frames.shape[1:3]
        done = len(frames)
        yield head
        if head.count == 0:
            return
        del frames, head
        for frames in windows:
            live = {obj_id: m for obj_id, m in live.items() if (m > 0).any()}
            if not live:  # everyone lost: nobody left to track
                for _ in range(len(frames) - 1):
                    yield np.zeros((h, w), np.uint8)
                done += len(frames) - 1
                report("track", done, total)
                continue
            last: dict[int, np.ndarray] = {}
            with tempfile.TemporaryDirectory(prefix="scailflow-sam2-") as tmp, self._autocast():
                self._write_frames(frames, tmp)
                state = self.predictor.init_state(tmp, offload_video_to_cpu=True)
                for obj_id, logits in live.items():
                    self.predictor.add_new_mask(state, frame_idx=0, obj_id=obj_id, mask=logits > 0)
                for frame_idx, frame_labels, frame_logits in self._propagate(state, person_of, (h, w)):
                    if frame_idx == 0:
                        continue  # the previous window's last frame, already given
                    yield frame_labels
                    if frame_idx == len(frames) - 1:
                        last = frame_logits
                    done += 1
                    report("track", done, total)
            live = last


def _sam2_has_extension() -> bool:
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


SAM3_DETECTION_THRESHOLD = 0.25  # the official preprocessing's confidence (sam3's builder defaults to 0.5)


class Sam3VideoSegmenter:
    """SAM 3's video model (the official preprocessing's tracker), prompted with text ("human") on the first frame.

    `model` has the `sam3` package's video-model interface: `init_state(resource_path=...)`,
    `add_prompt(state, frame_idx=, text_str=)` and `propagate_in_video(state, ...)` yielding `(frame_index, outputs)`
    with `out_obj_ids` and `out_binary_masks` at the frame size. The model is driven directly (not through sam3's
    predictor wrapper, which moves it to CUDA unconditionally), so it runs on a CPU too.
    """

    name = "sam3"

    def __init__(self, model: Any, prompt: str = "human", device: str = "cpu"):
        self.model = model
        self.prompt = prompt
        self.device = device

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Path | None, device: str = "cpu", prompt: str = "human", **build: Any
    ) -> Sam3VideoSegmenter:
        """The `sam3` package's video model from a local checkpoint (never a download). `checkpoint=None` keeps random
        weights (tests only); `build` goes to sam3's builder."""
        try:
            from sam3.model_builder import build_sam3_video_model
        except ImportError:
            raise InputError(
                "the sam3 backend needs the `sam3` package: pip install 'scailflow[sam3]' (or use sam2 / mediapipe)"
            ) from None
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise InputError(f"SAM 3 checkpoint not found: {checkpoint}")
        if not str(device).startswith("cuda"):
            # sam3 0.1.4 builds and feeds its model with tensors hard-coded to CUDA (position encodings, frames)
            raise InputError(
                "the sam3 backend runs on a CUDA GPU only (the sam3 package's own limit); on a CPU use "
                "sam2 or mediapipe"
            )
        try:
            model = build_sam3_video_model(
                checkpoint_path=str(checkpoint) if checkpoint else None, load_from_HF=False, device=device, **build
            )
        except (RuntimeError, KeyError, OSError, ValueError) as e:
            raise InputError(f"cannot load SAM 3 from {checkpoint}: {e.__class__.__name__}: {e}") from None
        model.score_threshold_detection = SAM3_DETECTION_THRESHOLD
        return cls(model.eval(), prompt, device)

    def _autocast(self):
        if str(self.device).startswith("cuda"):
            import torch

            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def segment(self, frames: np.ndarray, select: Selector, boxes: Sequence[Box] | None = None) -> Segmentation:
        import torch
        from PIL import Image

        t, h, w = frames.shape[:3]
        per_frame: dict[int, dict[int, np.ndarray]] = {}
        with tempfile.TemporaryDirectory(prefix="scailflow-sam3-") as tmp, torch.inference_mode(), self._autocast():
            for i, frame in enumerate(frames):
                Image.fromarray(frame).save(Path(tmp) / f"{i}.jpg", quality=95)
            state = self.model.init_state(resource_path=tmp)
            self.model.add_prompt(state, frame_idx=0, text_str=self.prompt)
            for frame_idx, out in self.model.propagate_in_video(
                state, start_frame_idx=0, max_frame_num_to_track=t, reverse=False
            ):
                ids = [int(i) for i in np.asarray(out["out_obj_ids"]).reshape(-1)]
                masks = np.asarray(out["out_binary_masks"]) if ids else np.zeros((0, h, w), bool)
                if masks.ndim == 4:  # [N, 1, H, W]
                    masks = masks[:, 0]
                per_frame[int(frame_idx)] = {oid: _fit(masks[k], (h, w)) for k, oid in enumerate(ids)}
        first_ids = sorted(per_frame.get(0, {}))
        kept = select([per_frame[0][oid] for oid in first_ids])
        if not kept:
            return _empty(frames, len(first_ids))
        labels = np.zeros((t, h, w), np.uint8)
        for frame_idx, objs in per_frame.items():
            stack = np.zeros((len(kept), h, w), np.float32)
            for p, i in enumerate(kept):
                if first_ids[i] in objs:
                    stack[p] = objs[first_ids[i]]
            labels[frame_idx] = compose_labels(stack)
        return Segmentation(labels, len(kept), len(first_ids))


def _fit(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask, np.float32)
    if m.shape != size:
        m = cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return m > 0.5
