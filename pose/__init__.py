"""Driving-input preparation for SCAIL-2: end-to-end copy or a pose-driven 3D skeleton render.

`prepare_driving` is the entry point; `PoseWeights` configures the optional DWPose / NLF models (without them
the mediapipe model embedded in its wheel is used). No Prefect in here.
"""

from scailflow.lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "stage": ("PoseResult", "output_paths", "prepare_driving"),
        "weights": ("PoseWeights",),
        "options": ("PoseOptions",),
    },
)
