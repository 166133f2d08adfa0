"""Person masks for SCAIL-2: segmentation/tracking (mediapipe default, SAM 2, SAM 3), palette colouring and
lossless writing of `ref_mask.png` plus `rendered_mask_v2.mp4` (animation) or `replace_mask.mp4` (replacement).

No Prefect in here: the flow calls `make_masks` and `preview`; `scailflow masks preview` uses `cli`.
"""
from .edits import frame_overrides, mask_digest, mask_sources, override_dir, read_mask_image, read_mask_video
from .errors import NoPersonError, TooManyPersonsError
from .palette import ALLOWED_COLOURS, BLACK, PALETTE, PALETTE_NAMES, WHITE, is_pure, snap_to_palette
from .preview import preview
from .render import write_mask_image, write_mask_video
from .segmenters import MediapipeSegmenter, Sam2VideoSegmenter, Sam3VideoSegmenter, Segmentation
from .stage import MaskResult, build_segmenter, make_masks, output_paths

__all__ = [
    "make_masks", "MaskResult", "build_segmenter", "output_paths", "preview",
    "read_mask_video", "read_mask_image", "snap_to_palette", "is_pure", "write_mask_image", "write_mask_video",
    "frame_overrides", "override_dir", "mask_sources", "mask_digest",
    "NoPersonError", "TooManyPersonsError",
    "MediapipeSegmenter", "Sam2VideoSegmenter", "Sam3VideoSegmenter", "Segmentation",
    "PALETTE", "PALETTE_NAMES", "ALLOWED_COLOURS", "BLACK", "WHITE",
]
