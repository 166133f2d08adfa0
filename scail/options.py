"""The generation options, defined once: sampling (what the official generate.py calls sample_*, plus size, fps and
segments) and the model (which weights, where they run, which speed-ups).

Plain pydantic, importable without torch: the command line, job.yaml / pipelines.yaml, the JSON Schema and
`load_pipeline` / `generate` all take these models (scailflow/options.py derives the flags from the fields).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from scailflow.options import Flag, FlagAlias, Options, choices, str2bool

Preset = Literal["quality", "balanced", "fast", "comfy"]
Solver = Literal["unipc", "dpm++", "euler"]
ColorMatch = Literal["reinhard", "histogram", "off"]
ModelName = Literal["scail2", "SCAIL-14B", "tiny-random"]  # SCAIL-14B: the official name of the released model
Offload = Literal["none", "model", "block"]
Dtype = Literal["auto", "bf16", "fp16", "fp32"]
Attention = Literal["auto", "sdpa", "cudnn", "flash", "flash3", "sage"]

SOLVERS = choices(Solver)
OFFLOAD_MODES = choices(Offload)
MODELS = choices(ModelName)
ATTENTION_CHOICES = choices(Attention)
PRESETS: dict[str, dict] = {
    "quality": dict(steps=40, shift=3.0, guidance=5.0, solver="unipc", cfg_truncate=1.0),
    # quality's sampler with the step cache (PRESET_STEP_CACHE) and CFG only for the first 80% of the steps
    "balanced": dict(steps=40, shift=3.0, guidance=5.0, solver="unipc", cfg_truncate=0.8),
    # the lightx2v step/cfg distill LoRA (rank 128) is what makes 8 steps without CFG work
    "fast": dict(steps=8, shift=1.0, guidance=1.0, solver="unipc"),
    # ComfyUI's SCAIL-2 template: Euler, 6 steps, shift 5, no CFG, with lightx2v distill (0.8) + SCAIL-2 DPO (1.0)
    "comfy": dict(steps=6, shift=5.0, guidance=1.0, solver="euler"),
}
# the step cache a preset turns on when --step_cache is not given (scail/step_cache.py)
PRESET_STEP_CACHE: dict[str, str] = {"balanced": "easy"}
# the LoRA strengths a preset is made for, in --lora_path order (the paths are the user's: nothing is downloaded)
PRESET_LORAS: dict[str, tuple[tuple[str, float], ...]] = {
    "fast": (("lightx2v I2V step/cfg distill", 1.0),),
    "comfy": (("lightx2v I2V step/cfg distill (rank 64)", 0.8), ("SCAIL-2 DPO", 1.0)),
}


KEYED_WHEN_SET = ("pose_strength", "pose_start", "pose_end")  # added later: in keys only when not at their default


# ------------------------------------------------------------------------------------------------ step cache
STEP_CACHE_KINDS = ("easy", "mag", "firstblock", "taylorseer")
# threshold when none is given: EasyCache as ComfyUI's node (0.2), MagCache and FBC as diffusers' configs; TaylorSeer's
# is the number of steps between full forwards
STEP_CACHE_DEFAULTS = {"easy": 0.2, "mag": 0.06, "firstblock": 0.05, "taylorseer": 4}
_STEP_CACHE_ALIASES = {"fbc": "firstblock", "first_block": "firstblock", "easycache": "easy", "magcache": "mag"}
_STEP_CACHE_OFF = ("off", "none", "no", "0")


@dataclass(frozen=True)
class StepCacheSpec:
    """One step cache: its kind and threshold (`force_skip_ratio`: benchmarks only, a fixed skip pattern)."""

    kind: str
    threshold: float
    force_skip_ratio: float | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.threshold:g}"


def parse_step_cache(value) -> StepCacheSpec | None:
    """`--step_cache` as a spec: None / off -> None; a number -> firstblock with that threshold; KIND[:THRESHOLD]."""
    if value is None or isinstance(value, bool):
        if value:
            raise ValueError("step_cache: give a kind (easy, mag, firstblock, taylorseer) or a threshold")
        return None
    if isinstance(value, (int, float)):
        return _spec("firstblock", float(value))
    text = str(value).strip().lower()
    if text in _STEP_CACHE_OFF or not text:
        return None
    try:
        return _spec("firstblock", float(text))
    except ValueError:
        pass
    kind, _, thr = text.partition(":")
    kind = _STEP_CACHE_ALIASES.get(kind, kind)
    if kind not in STEP_CACHE_KINDS:
        raise ValueError(
            f"step_cache {value!r}: use easy, mag, firstblock or taylorseer, optionally with :THRESHOLD "
            "(e.g. easy:0.1), a plain threshold for firstblock, or off"
        )
    try:
        threshold = float(thr) if thr else STEP_CACHE_DEFAULTS[kind]
    except ValueError:
        raise ValueError(f"step_cache {value!r}: the threshold after ':' must be a number") from None
    return _spec(kind, threshold)


def _spec(kind: str, threshold: float) -> StepCacheSpec:
    if not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"step_cache: the {kind} threshold must be a positive number, got {threshold:g}")
    if kind == "taylorseer" and (threshold != int(threshold) or threshold < 2):
        raise ValueError("step_cache: taylorseer's threshold is the steps between full forwards, an integer >= 2")
    return StepCacheSpec(kind, threshold)


def normalize_step_cache(value):
    """The option's stored form: None, "off", a plain number (firstblock, as before) or "kind" / "kind:threshold"."""
    if value is None:
        return None
    spec = parse_step_cache(value)
    if spec is None:
        return "off"
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().lower()
    try:
        return float(text)
    except ValueError:
        return spec.kind if ":" not in text else spec.label


class SamplingOptions(Options):
    """How one video is sampled (job.yaml `sampling:`; the official generate.py's sample_* flags)."""

    preset: Annotated[Preset, Flag("--preset")] = Field(
        "quality",
        description="quality: 40 steps, shift 3, CFG 5, UniPC; balanced: quality's with the EasyCache step cache "
        "and CFG over the first 0.8 of the steps only (about half the forwards; its quality on real weights is "
        "yours to check: run both presets on one clip); fast: 8 steps, shift 1, CFG 1 (with the lightx2v LoRA); "
        "comfy: ComfyUI's template, 6 Euler steps, shift 5, CFG 1 (with the lightx2v LoRA at 0.8 and the DPO LoRA "
        "at 1.0)",
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
    cfg_truncate: Annotated[float | None, Flag("--cfg_truncate", "--cfg-truncate")] = Field(
        None,
        gt=0,
        le=1,
        description="CFG only during this first fraction of the steps, the rest unguided (one forward each); "
        "1 = CFG at every step (default: the preset's)",
    )
    seed: Annotated[int, Flag("--base_seed", "--seed")] = Field(
        -1, ge=-1, le=sys.maxsize, description="-1: a random seed, printed and recorded"
    )
    negative_prompt: Annotated[str, Flag("--negative_prompt")] = Field("", description="negative prompt for CFG")
    target_h: Annotated[int, Flag("--target_h", "--target-h")] = Field(
        512,
        ge=32,
        le=4096,
        description="output height, a multiple of 32 (swapped with the width when the "
        "reference's orientation differs, as the official code does)",
    )
    target_w: Annotated[int, Flag("--target_w", "--target-w")] = Field(
        896, ge=32, le=4096, description="output width, a multiple of 32"
    )
    fps: Annotated[float | None, Flag("--fps")] = Field(
        None, gt=0, le=240, description="output fps (default: the driving video's; 16 reproduces the official code)"
    )
    driving_fps: Annotated[float | Literal["source"] | None, Flag("--driving_fps", "--driving-fps")] = Field(
        None,
        description="the rate the driving video's frames are taken at, by timestamp, before any stage (every stage "
        "and the output run at it): a number such as 16 (the cheapest), `source` (every frame), or by default the "
        "source's rate capped at 30 (60 fps is taken at 30, 59.94 at 29.97; a constant-rate clip at 30 or less keeps "
        "every frame)",
    )
    keep_tail: Annotated[bool, Flag("--keep_tail", "--keep-tail")] = Field(
        False, description="keep the trailing frames the official code drops (last segment padded, then trimmed)"
    )
    pose_strength: Annotated[float, Flag("--pose_strength", "--pose-strength")] = Field(
        1.0,
        ge=0,
        le=10,
        description="scale of the pose latent (ComfyUI's WanSCAILToVideo pose_strength; 1: as trained)",
    )
    pose_start: Annotated[float, Flag("--pose_start", "--pose-start")] = Field(
        0.0,
        ge=0,
        le=1,
        description="fraction of the schedule where the pose starts to condition the model (0: first step)",
    )
    pose_end: Annotated[float, Flag("--pose_end", "--pose-end")] = Field(
        1.0,
        ge=0,
        le=1,
        description="fraction of the schedule after which the pose stops conditioning it (1: last step)",
    )
    segment_frames: Annotated[int, Flag("--segment_frames", "--segment-frames", "--segment_len")] = Field(
        81, ge=5, le=1001, description="long videos: frames per segment (4k+1)"
    )
    overlap_frames: Annotated[int, Flag("--overlap_frames", "--overlap-frames", "--segment_overlap")] = Field(
        5, ge=1, le=997, description="frames handed from one segment to the next (4k+1, less than a segment)"
    )
    color_match: Annotated[ColorMatch | None, Flag("--color_match", "--color-match")] = Field(
        None,
        description="long videos: match every later segment's colours to the first segment's (Lab mean/std: "
        "reinhard; per-channel histograms: histogram). Default: off in `generate` (as official), reinhard in "
        "`run`/`batch`",
    )
    audio: Annotated[bool, Flag("--audio")] = Field(
        True,
        description="carry the driving video's sound into the output, trimmed to the frames kept (--no-audio: silent)",
    )

    @field_validator("driving_fps")
    @classmethod
    def _driving_fps(cls, v):
        if isinstance(v, float) and not 0 < v <= 240:
            raise ValueError(f"must be a rate in (0, 240] fps or `source`, got {v:g}")
        return v

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_range(cls, v):
        # YAML reads 1e23 as a float and `yes` as a bool: say what a seed is instead of pydantic's parse error
        if isinstance(v, bool) or (isinstance(v, float) and not (v.is_integer() and -1 <= v <= 2**31 - 1)):
            raise ValueError(f"must be an integer from -1 (random) to {2**31 - 1}, got {v!r}")
        return v

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

    @model_validator(mode="after")
    def _pose_window(self):
        if self.pose_start > self.pose_end:
            raise ValueError(f"pose_start ({self.pose_start:g}) must not be after pose_end ({self.pose_end:g})")
        return self

    def key_doc(self, exclude: set[str] | None = None) -> dict:
        """These options as they enter cache keys and take names. Options added later are left out at their
        defaults, so the takes and cached videos made before they existed keep their names."""
        doc = self.model_dump(mode="json", exclude=exclude)
        for name in KEYED_WHEN_SET:
            if name in doc and doc[name] == type(self).model_fields[name].default:
                del doc[name]
        return doc

    def resolved(self) -> SamplingOptions:
        """These options with the preset's values filled in where none was given."""
        preset = PRESETS[self.preset]
        return self.model_copy(update={k: v for k, v in preset.items() if getattr(self, k) is None})

    @property
    def uses_cfg(self) -> bool:
        return self.resolved().guidance > 1.0

    def guided_steps(self) -> int:
        """How many of the (resolved) steps run CFG's two branches; the last ones run the conditional branch only."""
        r = self.resolved()
        if r.guidance <= 1.0:
            return 0
        return max(1, math.ceil(r.steps * (r.cfg_truncate if r.cfg_truncate is not None else 1.0) - 1e-9))


def offload_from_official(text: str) -> str:
    """The official `--offload_model True|False` as our `offload`: True moves each component to the GPU only while
    it runs (`model`), False keeps everything there (`none`)."""
    return "model" if str2bool(text) else "none"


class ModelOptions(Options):
    """Which model, where it runs and how fast (pipelines.yaml `model:`; the same flags on generate, run, batch and
    worker). The speed-ups are measured in the README's performance section."""

    model: Annotated[ModelName, Flag("--model")] = Field(
        "scail2",
        description="scail2 (or SCAIL-14B, its official name): the released model; tiny-random: a tiny untrained "
        "model built in memory (its output is noise), to check an installation",
    )
    ckpt_dir: Annotated[str | None, Flag("--ckpt_dir", "--ckpt-dir")] = Field(
        None, description="SCAIL-2 release folder (VAE, umt5-xxl, CLIP); else SCAILFLOW_CKPT_DIR"
    )
    scail_path: Annotated[str | None, Flag("--scail_path", "--scail-path")] = Field(
        None, description="converted SCAIL-2 DiT .safetensors; else SCAILFLOW_SCAIL_PATH"
    )
    scail_config_path: Annotated[str | None, Flag("--scail_config_path", "--scail-config-path")] = Field(
        None,
        description="the DiT's config.json (official keys); default: config.json beside --scail_path, else read "
        "from the weights' shapes",
    )
    lora_path: Annotated[list[str], Flag("--lora_path", "--lora-path")] = Field(
        default_factory=list,
        description="LoRAs to merge, in order (lightx2v/ComfyUI, diffusers/PEFT, kohya or SCAIL training format)",
    )
    lora_alpha: Annotated[list[float], Flag("--lora_alpha", "--lora-alpha")] = Field(
        default_factory=list,
        description="their strengths, one per LoRA or one for all (default: the preset's, else 1.0)",
    )
    offload: Annotated[
        Offload,
        Flag("--offload"),
        FlagAlias(
            "--offload_model",
            convert=offload_from_official,
            metavar="True|False",
            help="the official flag: True = --offload model, False = --offload none",
        ),
    ] = Field(
        "none", description="none: all on the GPU; model: one component at a time; block: DiT block groups streamed"
    )
    t5_cpu: Annotated[bool, Flag("--t5_cpu", "--t5-cpu")] = Field(
        False, description="keep the T5 text encoder on the CPU (the official flag): less GPU memory, slower prompts"
    )
    vram_budget_gb: Annotated[float | None, Flag("--vram_budget_gb", "--vram-budget-gb")] = Field(
        None,
        gt=0,
        description="with --offload block: GPU memory (GiB) the DiT's weights may take: as many blocks as fit stay "
        "on the GPU, the rest stream one at a time (activations come on top: ~6 GiB at 896x512, 81 frames). "
        "Default: every block streams (least memory)",
    )
    device: Annotated[str, Flag("--device")] = Field("auto", description="auto, cpu, cuda, cuda:N")
    dtype: Annotated[Dtype, Flag("--dtype")] = Field("auto", description="auto: bf16 on a GPU, fp32 on a CPU")
    attention: Annotated[Attention | None, Flag("--attention")] = Field(
        None,
        description="attention backend; auto: FlashAttention 3 on Hopper GPUs when scailflow[hopper] is installed, "
        "else cuDNN (default: torch SDPA's own choice, or FlashAttention 3 where auto would pick it)",
    )
    fp8_attention: Annotated[bool, Flag("--fp8_attention", "--fp8-attention")] = Field(
        False,
        description="fp8 self-attention in FlashAttention 3 (Hopper, scailflow[hopper]): Hadamard-rotated q and k, "
        "per-head scales, bf16 output; off with a warning where FlashAttention 3 cannot run",
    )
    compile: Annotated[bool | None, Flag("--compile")] = Field(
        None,
        description="torch.compile the repeated DiT block (the first step is slower; kernels cached under "
        "SCAILFLOW_HOME/compile for later processes). Default: on with a CUDA GPU (sm80+, Triton), off on the CPU and "
        "with --offload block; --no-compile turns it off",
    )
    fp8: Annotated[bool, Flag("--fp8")] = Field(
        False, description="fp8 weights and matmuls in the DiT blocks (Ada/Hopper GPUs)"
    )
    step_cache: Annotated[str | None, Flag("--step_cache", "--step-cache", metavar="KIND[:THRESHOLD]")] = Field(
        None,
        description="skip DiT forwards that would change little: easy (EasyCache: no calibration), mag (MagCache: "
        "run `scailflow calibrate` once for these weights), firstblock (First Block Cache), taylorseer (TaylorSeer, "
        "threshold = steps between full forwards); off = none. A plain number is firstblock with that threshold "
        "(default: the preset's, i.e. easy with --preset balanced)",
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

    @field_validator("step_cache", mode="plain")
    @classmethod
    def _step_cache(cls, v):
        # a plain number stays a number (First Block Cache's threshold, as before); names are checked here
        return normalize_step_cache(v)

    @field_validator("lora_path", "lora_alpha", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        if v is None:
            return []
        return v if isinstance(v, (list, tuple)) else [v]

    @model_validator(mode="after")
    def _alphas(self):
        if self.lora_alpha and len(self.lora_alpha) not in (1, len(self.lora_path)):
            raise ValueError(
                f"give one strength per LoRA or one for all: {len(self.lora_path)} LoRA(s), "
                f"{len(self.lora_alpha)} strengths"
            )
        return self

    def loras(self) -> list[tuple[str, float]]:
        """(path, strength) of every LoRA, in order."""
        alphas = self.lora_alpha or [1.0]
        if len(alphas) == 1:
            alphas = alphas * len(self.lora_path)
        return list(zip(self.lora_path, alphas))

    def for_preset(self, preset: str) -> ModelOptions:
        """These options with the preset's LoRA strengths filled in where the user gave paths but no strengths."""
        wanted = PRESET_LORAS.get(preset, ())
        if self.lora_alpha or not self.lora_path or not wanted:
            return self
        alphas = [a for _, a in wanted][: len(self.lora_path)]
        alphas += [1.0] * (len(self.lora_path) - len(alphas))
        return self.model_copy(update={"lora_alpha": alphas})

    @model_validator(mode="after")
    def _fp8_attention_backend(self):
        if self.fp8_attention and self.attention not in (None, "auto", "flash3"):
            raise ValueError(
                f"fp8_attention runs in FlashAttention 3: use attention auto or flash3, not {self.attention}"
            )
        return self

    @field_validator("model", mode="before")
    @classmethod
    def _official_name(cls, v):
        # the official generate.py upper-cases --model; SCAIL-14B is the released model, which we call scail2
        return "scail2" if isinstance(v, str) and v.upper() == "SCAIL-14B" else v

    def speedups(self) -> dict:
        """The speed-ups asked for (for records and logs)."""
        keys = ("attention", "fp8_attention", "compile", "fp8", "step_cache", "vae_tiling", "cfg_batch")
        return {k: getattr(self, k) for k in keys if getattr(self, k)}


class ParallelOptions(Options):
    """Several GPUs on one clip (`scailflow generate` only), with the official generate.py's flags accepted."""

    gpus: Annotated[int | None, Flag("--gpus")] = Field(
        None, ge=1, le=1024, description="GPUs for this clip: CFG-parallel x Ulysses under torchrun (scail/parallel.py)"
    )
    ulysses_size: Annotated[int, Flag("--ulysses_size", "--ulysses-size")] = Field(
        1, ge=1, le=1024, description="the official flag: ulysses_size x ring_size GPUs (scailflow's plan runs them)"
    )
    ring_size: Annotated[int, Flag("--ring_size", "--ring-size")] = Field(
        1,
        ge=1,
        le=1024,
        description="the official flag: counts GPUs as above (no ring attention here; CFG x Ulysses instead) and "
        "appears in the official automatic file name",
    )
    t5_fsdp: Annotated[bool, Flag("--t5_fsdp", "--t5-fsdp")] = Field(
        False, description="the official flag, accepted: scailflow does not shard T5 (see --t5_cpu)"
    )
    dit_fsdp: Annotated[bool, Flag("--dit_fsdp", "--dit-fsdp")] = Field(
        False, description="the official flag, accepted: scailflow does not shard the DiT (see --offload block, --fp8)"
    )

    @model_validator(mode="after")
    def _one_count(self):
        official = self.ulysses_size * self.ring_size
        if self.gpus is not None and official > 1 and self.gpus != official:
            raise ValueError(
                f"--gpus {self.gpus} but --ulysses_size {self.ulysses_size} x --ring_size {self.ring_size} = "
                f"{official}: give one GPU count"
            )
        return self

    @property
    def world_size(self) -> int:
        """GPUs asked for: --gpus, else ulysses_size x ring_size."""
        return self.gpus if self.gpus is not None else self.ulysses_size * self.ring_size

    def notes(self) -> list[str]:
        """One line per official flag that is accepted but runs differently here."""
        out = []
        if self.ring_size > 1:
            out.append(
                f"--ring_size {self.ring_size}: no ring attention here; the {self.world_size} GPUs run scailflow's "
                "plan (CFG-parallel x Ulysses): the same video up to float rounding"
            )
        if self.t5_fsdp:
            out.append("--t5_fsdp: T5 is not sharded here; each GPU encodes the prompt itself (--t5_cpu keeps it off)")
        if self.dit_fsdp:
            out.append(
                "--dit_fsdp: the DiT is not sharded here; each GPU holds it (--offload block or --fp8 shrink it)"
            )
        return out
