"""Person masks for SCAIL-2: segmentation/tracking (mediapipe default, SAM 2, SAM 3), palette colouring and
lossless writing of `ref_mask.png` plus `rendered_mask_v2.mp4` (animation) or `replace_mask.mp4` (replacement).

No Prefect in here: the flow calls `make_masks` and `preview`; `scailflow masks preview` uses `cli`.
"""

from scailflow.lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "stage": ("make_masks", "MaskResult", "build_segmenter", "output_paths"),
        "sheet": ("preview",),
        "edits": (
            "frame_overrides",
            "mask_digest",
            "mask_sources",
            "override_dir",
            "read_mask_image",
            "read_mask_video",
            "stream_mask_video",
        ),
        "errors": ("NoPersonError", "TooManyPersonsError"),
        "palette": ("ALLOWED_COLOURS", "BLACK", "PALETTE", "PALETTE_NAMES", "WHITE", "is_pure", "snap_to_palette"),
        "render": ("write_mask_image", "write_mask_video"),
        "segmenters": ("MediapipeSegmenter", "Sam2VideoSegmenter", "Sam3VideoSegmenter", "Segmentation"),
        "options": ("MaskOptions",),
    },
)
