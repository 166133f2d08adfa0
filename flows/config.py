"""job.yaml and pipelines.yaml: validated with pydantic; errors name the file, the line and the key."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scailflow.errors import InputError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplingConfig(Strict):
    preset: Literal["quality", "fast"] = "quality"
    steps: Optional[int] = Field(None, ge=1, le=1000)
    shift: Optional[float] = Field(None, gt=0)
    guidance: Optional[float] = Field(None, ge=0)
    solver: Optional[Literal["unipc", "dpm++"]] = None
    seed: int = -1
    negative_prompt: str = ""
    target_h: int = 896
    target_w: int = 512
    fps: Optional[float] = Field(None, gt=0)
    keep_tail: bool = False
    segment_frames: int = 81
    overlap_frames: int = 5

    @field_validator("target_h", "target_w")
    @classmethod
    def _mult32(cls, v: int) -> int:
        if v <= 0 or v % 32:
            raise ValueError("must be a positive multiple of 32")
        return v


class MaskConfig(Strict):
    backend: Literal["auto", "mediapipe", "sam2", "sam3"] = "auto"
    sam2_checkpoint: Optional[str] = None
    sam2_config: Optional[str] = None
    max_persons: int = Field(2, ge=1, le=6)
    replace_index: Optional[int] = Field(None, ge=0)
    dilate_px: int = Field(0, ge=0, le=64)


class PoseConfig(Strict):
    dwpose_det: Optional[str] = None
    dwpose_pose: Optional[str] = None
    nlf: Optional[str] = None
    dwpose_det_sha256: Optional[str] = Field(None, pattern=r"^[0-9a-fA-F]{64}$")  # optional pins: a model file
    dwpose_pose_sha256: Optional[str] = Field(None, pattern=r"^[0-9a-fA-F]{64}$")  # whose hash differs is refused
    nlf_sha256: Optional[str] = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    align: bool = False
    legacy_mask_colours: bool = False


class PromptConfig(Strict):
    instruction: Optional[str] = None
    model: str = "gemini-2.5-flash"
    temperature: float = Field(0.4, ge=0, le=2)
    num_frames: int = Field(8, ge=1, le=64)
    examples: Optional[str] = None
    fallback_to_prompt_file: bool = True
    default_prompt: str = ("A person performs the motion of the driving video with natural, fluid movement, "
                           "consistent identity, clothing and lighting, in a clean, well-lit scene.")


class JobConfig(Strict):
    """Per-folder options (job.yaml), also the shared defaults of pipelines.yaml."""

    mode: Literal["animation", "replacement"] = "animation"
    driving: Literal["end-to-end", "pose"] = "end-to-end"
    prompt: Optional[str] = None
    sampling: SamplingConfig = SamplingConfig()
    masks: MaskConfig = MaskConfig()
    pose: PoseConfig = PoseConfig()
    prompt_enhancer: PromptConfig = PromptConfig()

    @model_validator(mode="before")
    @classmethod
    def _instruction_shortcut(cls, data: Any) -> Any:
        # `instruction:` at the top level is the common case; it belongs to the prompt enhancer
        if isinstance(data, dict) and "instruction" in data:
            data = dict(data)
            pe = dict(data.get("prompt_enhancer") or {})
            pe.setdefault("instruction", data.pop("instruction"))
            data["prompt_enhancer"] = pe
        return data


class ModelConfig(Strict):
    model: Literal["scail2", "tiny-random"] = "scail2"
    ckpt_dir: Optional[str] = None
    scail_path: Optional[str] = None
    lora_path: Optional[str] = None
    lora_alpha: float = 1.0
    offload: Literal["none", "model", "block"] = "none"
    vram_budget_gb: Optional[float] = None
    oom_retry_offload: bool = True  # on GPU out-of-memory with offload none: one more try with block offload
    device: str = "auto"
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    # speed-ups (scail/speed.py; numbers in the README): attention backend, regional compile, fp8 linears,
    # step cache threshold (FirstBlockCache), VAE tiling
    attention: Optional[Literal["auto", "sdpa", "cudnn", "flash", "flash3", "sage"]] = None
    compile: bool = False
    fp8: bool = False
    step_cache: Optional[float] = Field(None, gt=0)
    vae_tiling: bool = False


class Schedule(Strict):
    cron: Optional[str] = None
    interval_seconds: Optional[float] = Field(None, gt=0)
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _one(self):
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("give exactly one of cron or interval_seconds")
        return self


class PipelineEntry(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    root: Optional[str] = None  # every folder directly under root that holds a driving video
    folders: list[str] = []
    out: Optional[str] = None  # outputs under out/<folder name>/ (default: each folder's scailflow/)
    options: dict[str, Any] = {}
    schedule: Optional[Schedule] = None

    @model_validator(mode="after")
    def _source(self):
        if not self.root and not self.folders:
            raise ValueError("give a root folder or a list of folders")
        return self


class PipelinesFile(Strict):
    defaults: dict[str, Any] = {}
    model: ModelConfig = ModelConfig()
    gpus: int = Field(1, ge=1, le=64)
    workers: bool = False  # send generation to warm GPU workers (`scailflow worker`, one per GPU)
    pipelines: list[PipelineEntry] = Field(min_length=1)


# ------------------------------------------------------------------------------------------ YAML with line numbers
def _key_lines(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = prefix + (k.value,)
            lines[key] = k.start_mark.line + 1
            lines.update(_key_lines(v, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            lines[prefix + (i,)] = v.start_mark.line + 1
            lines.update(_key_lines(v, prefix + (i,)))
    return lines


def load_yaml(path: str | os.PathLike) -> tuple[Any, dict[tuple, int]]:
    """Parse a YAML file; returns the data and a map from key paths to line numbers."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise InputError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    return (data if data is not None else {}), (_key_lines(node) if node is not None else {})


def validation_message(path: Path, err: ValidationError, lines: dict[tuple, int], prefix: tuple = ()) -> str:
    first = err.errors()[0]
    loc = prefix + tuple(first["loc"])
    line = None
    for n in range(len(loc), 0, -1):  # the deepest key that exists in the file
        if loc[:n] in lines:
            line = lines[loc[:n]]
            break
    key = ".".join(str(p) for p in loc) or "(top level)"
    msg = first["msg"].replace("Extra inputs are not permitted", "unknown key")
    return f"{path}{f':{line}' if line else ''}: {key}: {msg}"


def parse_model(cls, data: Any, path: Path, lines: dict[tuple, int], prefix: tuple = ()):
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise InputError(validation_message(path, e, lines, prefix)) from None


def merge(base: dict, over: dict) -> dict:
    """Deep-merge `over` onto `base` (dicts merge, everything else replaces)."""
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_job(folder: Path, base: dict | None = None, overrides: dict | None = None) -> JobConfig:
    """Shared defaults <- the folder's job.yaml <- command-line overrides, validated as one JobConfig."""
    data = dict(base or {})
    path = folder / "job.yaml"
    lines: dict[tuple, int] = {}
    if path.is_file():
        own, lines = load_yaml(path)
        if not isinstance(own, dict):
            raise InputError(f"{path}:1: must be a mapping of options")
        data = merge(data, own)
    data = merge(data, overrides or {})
    return parse_model(JobConfig, data, path, lines)


def _resolve(base: Path, value: str | None) -> str | None:
    """Paths in pipelines.yaml are relative to the file; `~` is the user's home."""
    if not value:
        return value
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base / p))


def load_pipelines(path: str | os.PathLike) -> PipelinesFile:
    """Read and check pipelines.yaml; every error names the file, the line and the key."""
    path = Path(path)
    data, lines = load_yaml(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}:1: must be a mapping with a `pipelines:` list")
    cfg = parse_model(PipelinesFile, data, path, lines)
    base = path.resolve().parent
    for entry in cfg.pipelines:
        entry.root = _resolve(base, entry.root)
        entry.out = _resolve(base, entry.out)
        entry.folders = [_resolve(base, f) for f in entry.folders]
    for key in ("ckpt_dir", "scail_path", "lora_path"):
        setattr(cfg.model, key, _resolve(base, getattr(cfg.model, key)))
    for i, entry in enumerate(cfg.pipelines):  # options are JobConfig fields: check them now, with their line
        parse_model(JobConfig, merge(cfg.defaults, entry.options), path, lines, ("pipelines", i, "options"))
    parse_model(JobConfig, cfg.defaults, path, lines, ("defaults",))
    return cfg
