"""The pose stage's options (job.yaml `pose:`), defined once. Without model files the mediapipe model inside its
wheel is used; the files can also come from the environment (SCAILFLOW_DWPOSE_DET, ...: see weights.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from scailflow.options import FileOption, Flag, Options

SHA256 = r"^[0-9a-fA-F]{64}$"
Palette = Literal["v2", "v1"]  # limb colours: SCAIL v2 (P0/P1) or v1 (base)


class PoseOptions(Options):
    dwpose_det: Annotated[str | None, Flag("--dwpose-det", "--dwpose_det"), FileOption()] = Field(
        None, description="DWPose person detector, yolox_l.onnx (else SCAILFLOW_DWPOSE_DET)"
    )
    dwpose_pose: Annotated[str | None, Flag("--dwpose-pose", "--dwpose_pose"), FileOption()] = Field(
        None, description="DWPose whole-body keypoints, dw-ll_ucoco_384.onnx (else SCAILFLOW_DWPOSE_POSE)"
    )
    nlf: Annotated[str | None, Flag("--nlf"), FileOption()] = Field(
        None, description="NLF 3D pose, nlf_l_multi_0.3.2.torchscript (else SCAILFLOW_NLF)"
    )
    dwpose_det_sha256: str | None = Field(None, pattern=SHA256, description="pin: a file with another hash is refused")
    dwpose_pose_sha256: str | None = Field(None, pattern=SHA256)
    nlf_sha256: str | None = Field(None, pattern=SHA256)
    align: Annotated[bool, Flag("--align")] = Field(
        False, description="fit the driving skeleton to the reference's body size and position"
    )
    legacy_mask_colours: Annotated[bool, Flag("--legacy-mask-colours", "--legacy_mask_colours")] = Field(
        False,
        description="reproduce the official pose-mode mask render, whose BGR "
        "tuples are read as RGB (red<->blue, cyan<->yellow swapped vs ref_mask)",
    )
