"""The masks stage's options (job.yaml `masks:`; `scailflow run --mask-backend ...`), defined once."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from scailflow.options import FileOption, Flag, Options, choices

MaskBackend = Literal["auto", "mediapipe", "sam2", "sam3"]
# the model configs the sam2 package bundles: a config is a Hydra file whose `_target_`s are instantiated, so only
# these names are ever passed to it, never a path
Sam2Config = Literal[
    "configs/sam2.1/sam2.1_hiera_t.yaml",
    "configs/sam2.1/sam2.1_hiera_s.yaml",
    "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "configs/sam2.1/sam2.1_hiera_l.yaml",
    "configs/sam2/sam2_hiera_t.yaml",
    "configs/sam2/sam2_hiera_s.yaml",
    "configs/sam2/sam2_hiera_b+.yaml",
    "configs/sam2/sam2_hiera_l.yaml",
]
SAM2_CONFIGS = choices(Sam2Config)


class MaskOptions(Options):
    backend: Annotated[MaskBackend, Flag("--mask-backend", "--mask_backend")] = Field(
        "auto",
        description="auto: SAM 3 when sam3_checkpoint is set, else SAM 2 when sam2_checkpoint is set, else the "
        "embedded mediapipe segmenter (people split by its face detector)",
    )
    sam2_checkpoint: Annotated[str | None, Flag("--sam2-checkpoint", "--sam2_checkpoint"), FileOption()] = Field(
        None, description="SAM 2 checkpoint, e.g. ~/models/sam2.1_hiera_large.pt"
    )
    sam2_config: Sam2Config | None = Field(
        None, description="one of the sam2 package's bundled configs (default: from the checkpoint's name)"
    )
    sam3_checkpoint: Annotated[str | None, Flag("--sam3-checkpoint", "--sam3_checkpoint"), FileOption()] = Field(
        None, description="SAM 3 checkpoint (sam3.pt; needs the scailflow[sam3] extra), text-prompted"
    )
    sam3_prompt: str = Field("human", description="SAM 3's text prompt (the official preprocessing's)")
    max_persons: Annotated[int, Flag("--max-persons", "--max_persons")] = Field(
        2, ge=1, le=6, description="people to track, at most one per palette colour"
    )
    replace_index: Annotated[int | None, Flag("--replace-index", "--replace_index")] = Field(
        None, ge=0, description="replacement: which person (left to right); default: best IoU with the reference"
    )
    dilate_px: int = Field(0, ge=0, le=64, description="replacement: grow the replaced region by this many pixels")
    fit_reference: Annotated[bool, Flag("--fit-reference", "--fit_reference")] = Field(
        False,
        description="replacement: scale the reference (and its mask) so the character is as tall as the person "
        "replaced in the first driving frame (written as ref_fitted.png)",
    )

    @model_validator(mode="after")
    def _replace_index_tracked(self):
        if self.replace_index is not None and self.replace_index >= self.max_persons:
            raise ValueError(
                f"replace_index {self.replace_index} needs max_persons >= {self.replace_index + 1} "
                f"(people are counted from 0, left to right; {self.max_persons} tracked)"
            )
        return self
