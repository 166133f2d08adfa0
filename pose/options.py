"""The pose stage's options (job.yaml `pose:`), defined once. Without model files the mediapipe model inside its
wheel is used; the files can also come from the environment (SCAILFLOW_DWPOSE_DET, ...: see weights.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from scailflow.options import FileOption, Options

SHA256 = r"^[0-9a-fA-F]{64}$"
Palette = Literal["v2", "v1"]  # limb colours: SCAIL v2 (P0/P1) or v1 (base)


class PoseOptions(Options):
    dwpose_det: Annotated[str | None, FileOption()] = Field(None, description="DWPose person detector, yolox_l.onnx")
    dwpose_pose: Annotated[str | None, FileOption()] = Field(
        None, description="DWPose whole-body keypoints, dw-ll_ucoco_384.onnx"
    )
    nlf: Annotated[str | None, FileOption()] = Field(None, description="NLF 3D pose, nlf_l_multi_0.3.2.torchscript")
    dwpose_det_sha256: str | None = Field(None, pattern=SHA256, description="pin: a file with another hash is refused")
    dwpose_pose_sha256: str | None = Field(None, pattern=SHA256)
    nlf_sha256: str | None = Field(None, pattern=SHA256)
    align: bool = Field(False, description="fit the driving skeleton to the reference's body size and position")
    legacy_mask_colours: bool = Field(
        False,
        description="reproduce the official pose-mode mask render, whose BGR "
        "tuples are read as RGB (red<->blue, cyan<->yellow swapped vs ref_mask)",
    )
