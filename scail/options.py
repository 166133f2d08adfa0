"""The generation options, defined once: sampling (what the official generate.py calls sample_*, plus size, fps and
segments) and the model (which weights, where they run, which speed-ups).

Plain pydantic, importable without torch: the command line, job.yaml / pipelines.yaml, the JSON Schema and
`load_pipeline` / `generate` all take these models (scailflow/options.py derives the flags from the fields).
"""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from scailflow.options import Flag, Options, choices

Preset = Literal["quality", "fast"]
Solver = Literal["unipc", "dpm++"]
ModelName = Literal["scail2", "tiny-random"]
Offload = Literal["none", "model", "block"]
Dtype = Literal["auto", "bf16", "fp16", "fp32"]
Attention = Literal["auto", "sdpa", "cudnn", "flash", "flash3", "sage"]

SOLVERS = choices(Solver)
OFFLOAD_MODES = choices(Offload)
MODELS = choices(ModelName)
ATTENTION_CHOICES = choices(Attention)
PRESETS: dict[str, dict] = {
    "quality": dict(steps=40, shift=3.0, guidance=5.0, solver="unipc"),
    # the lightx2v step/cfg distill LoRA (rank 128) is what makes 8 steps without CFG work
    "fast": dict(steps=8, shift=1.0, guidance=1.0, solver="unipc"),
}


def draw_seed() -> int:
    """A fresh random seed from the OS's entropy (never from torch's global RNG, which model building seeds)."""
    return secrets.randbelow(2**31 - 1)


class SamplingOptions(Options):
    """How one video is sampled (job.yaml `sampling:`; the official generate.py's sample_* flags)."""

    preset: Annotated[Preset, Flag("--preset")] = Field(
        "quality",
        description="quality: 40 steps, shift 3, CFG 5, UniPC; fast: 8 steps, shift 1, CFG 1 (with the lightx2v LoRA)",
    )
    steps: Annotated[int | None, Flag("--sample_steps", "--steps")] = Field(
        None, ge=1, le=1000, description="denoising steps (default: the preset's)"
    )
    shift: Annotated[float | None, Flag("--sample_shift", "--shift")] = Field(
        None, gt=0, le=100, description="flow shift (default: the preset's)"
    )
    guidance: Annotated[float | None, Flag("--sample_guide_scale", "--guidance")] = Field(
        None, ge=0, le=100, description="classifier-free guidance scale; 1 = no CFG (default: the preset's)"
    )
    solver: Annotated[Solver | None, Flag("--sample_solver", "--solver")] = Field(
        None, description="sampler (default: the preset's)"
    )
    seed: Annotated[int, Flag("--base_seed", "--seed")] = Field(
        -1, ge=-1, le=2**31 - 1, description="-1: a fresh random seed (OS entropy), printed and recorded"
    )
    negative_prompt: Annotated[str, Flag("--negative_prompt")] = Field("", description="negative prompt for CFG")
    target_h: Annotated[int, Flag("--target_h", "--target-h")] = Field(
        896,
        ge=32,
        le=4096,
        description="output height, a multiple of 32 (swapped with the width when the "
        "reference's orientation differs, as the official code does)",
    )
    target_w: Annotated[int, Flag("--target_w", "--target-w")] = Field(
        512, ge=32, le=4096, description="output width, a multiple of 32"
    )
    fps: Annotated[float | None, Flag("--fps")] = Field(
        None, gt=0, le=240, description="output fps (default: the driving video's; 16 reproduces the official code)"
    )
    keep_tail: Annotated[bool, Flag("--keep_tail", "--keep-tail")] = Field(
        False, description="keep the trailing frames the official code drops (last segment padded, then trimmed)"
    )
    segment_frames: Annotated[int, Flag("--segment_frames", "--segment-frames")] = Field(
        81, ge=5, le=1001, description="long videos: frames per segment (4k+1)"
    )
    overlap_frames: Annotated[int, Flag("--overlap_frames", "--overlap-frames")] = Field(
        5, ge=1, le=997, description="frames handed from one segment to the next (4k+1, less than a segment)"
    )

    @field_validator("target_h", "target_w")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError("must be a positive multiple of 32")
        return v

    @model_validator(mode="after")
    def _segments(self):
        if (self.segment_frames - 1) % 4 or (self.overlap_frames - 1) % 4:
            raise ValueError("segment_frames and overlap_frames must be 4k+1 (e.g. 81 and 5)")
        if self.overlap_frames >= self.segment_frames:
            raise ValueError("overlap_frames must be less than segment_frames")
        return self

    def resolved(self) -> SamplingOptions:
        """These options with the preset's values filled in where none was given."""
        preset = PRESETS[self.preset]
        return self.model_copy(update={k: v for k, v in preset.items() if getattr(self, k) is None})

    @property
    def uses_cfg(self) -> bool:
        return self.resolved().guidance > 1.0


class ModelOptions(Options):
    """Which model, where it runs and how fast (pipelines.yaml `model:`; the same flags on generate, run, batch and
    worker). The speed-ups are measured in the README's performance section."""

    model: Annotated[ModelName, Flag("--model")] = Field(
        "scail2",
        description="tiny-random: a tiny untrained model built in memory (its output is noise), to check "
        "an installation",
    )
    ckpt_dir: Annotated[str | None, Flag("--ckpt_dir", "--ckpt-dir")] = Field(
        None, description="SCAIL-2 release folder (VAE, umt5-xxl, CLIP); else SCAILFLOW_CKPT_DIR"
    )
    scail_path: Annotated[str | None, Flag("--scail_path", "--scail-path")] = Field(
        None, description="converted SCAIL-2 DiT .safetensors; else SCAILFLOW_SCAIL_PATH"
    )
    lora_path: Annotated[str | None, Flag("--lora_path", "--lora-path")] = Field(
        None, description="LoRA to merge (lightx2v or SCAIL training format)"
    )
    lora_alpha: Annotated[float, Flag("--lora_alpha", "--lora-alpha")] = Field(1.0, description="LoRA strength")
    offload: Annotated[Offload, Flag("--offload")] = Field(
        "none", description="none: all on the GPU; model: one component at a time; block: DiT block groups streamed"
    )
    vram_budget_gb: Annotated[float | None, Flag("--vram_budget_gb", "--vram-budget-gb")] = Field(
        None, gt=0, description="with --offload block: GPU memory the DiT blocks may use"
    )
    device: Annotated[str, Flag("--device")] = Field("auto", description="auto, cpu, cuda, cuda:N")
    dtype: Annotated[Dtype, Flag("--dtype")] = Field("auto", description="auto: bf16 on a GPU, fp32 on a CPU")
    attention: Annotated[Attention | None, Flag("--attention")] = Field(
        None, description="attention backend (default: torch SDPA's own choice; auto: the fastest available)"
    )
    compile: Annotated[bool, Flag("--compile")] = Field(
        False, description="torch.compile the repeated DiT block (the first step is slower)"
    )
    fp8: Annotated[bool, Flag("--fp8")] = Field(
        False, description="fp8 weights and matmuls in the DiT blocks (Ada/Hopper GPUs)"
    )
    step_cache: Annotated[float | None, Flag("--step_cache", "--step-cache", metavar="THRESHOLD")] = Field(
        None,
        gt=0,
        description="First Block Cache: skip the later blocks while block 0's residual changes less than this",
    )
    vae_tiling: Annotated[bool, Flag("--vae_tiling", "--vae-tiling")] = Field(
        False, description="decode the VAE in tiles (less memory)"
    )
    cfg_batch: Annotated[bool, Flag("--cfg_batch", "--cfg-batch")] = Field(
        False, description="run CFG's two passes as one batch of 2 (measured no faster on an H100, 5.6 GiB more)"
    )
    oom_retry_offload: Annotated[bool, Flag("--oom-retry-offload")] = Field(
        True, description="in a flow, on GPU out-of-memory with offload none: one more try with block offload"
    )

    def speedups(self) -> dict:
        """The speed-ups asked for (for records and logs)."""
        keys = ("attention", "compile", "fp8", "step_cache", "vae_tiling", "cfg_batch")
        return {k: getattr(self, k) for k in keys if getattr(self, k)}
