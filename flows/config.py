"""job.yaml and pipelines.yaml: the option models of every stage, composed and validated; errors name the file, the
line and the key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, model_validator

from scailflow.errors import InputError
from scailflow.masks.options import MaskOptions
from scailflow.options import DrivingMode, Flag, Mode, Options, Stage, merge
from scailflow.pose.options import PoseOptions
from scailflow.prompts.options import PromptOptions
from scailflow.scail.options import ModelOptions, SamplingOptions


class JobConfig(Options):
    """Per-folder options (job.yaml), also the shared defaults of pipelines.yaml; `scailflow run` flags override."""

    mode: Annotated[Mode, Flag("--mode")] = Field("animation", description="animation | replacement")
    driving: Annotated[DrivingMode, Flag("--driving")] = Field(
        "end-to-end", description="end-to-end (the video itself) | pose (SCAIL skeleton render)"
    )
    prompt: Annotated[str | None, Flag("--prompt")] = Field(
        None, description="positive prompt (else prompt.txt, else the default)"
    )
    sampling: SamplingOptions = SamplingOptions()
    masks: MaskOptions = MaskOptions()
    pose: PoseOptions = PoseOptions()
    prompt_enhancer: PromptOptions = PromptOptions()

    @model_validator(mode="after")
    def _color_match_on(self):
        # long videos in a flow: later segments are colour-matched to the first unless the job says otherwise
        # (`scailflow generate` keeps the official behaviour: off)
        if self.sampling.color_match is None:
            self.sampling = self.sampling.model_copy(update={"color_match": "reinhard"})
        return self

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


class RunOptions(Options):
    """What one `scailflow run` forces (command line only: a folder's job.yaml describes the result, not a run)."""

    rerun: Annotated[list[Stage], Flag("--rerun")] = Field(
        [], description="run this stage even if its cached result holds (repeatable: --rerun pose --rerun masks)"
    )
    new_seed: Annotated[bool, Flag("--new-seed")] = Field(
        False, description="a new take: generate again with a fresh random seed (recorded in the take's name)"
    )


class Schedule(Options):
    cron: str | None = None
    interval_seconds: float | None = Field(None, gt=0)
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _one(self):
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("give exactly one of cron or interval_seconds")
        return self


class PipelineEntry(Options):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    root: str | None = None  # every folder directly under root that holds a driving video
    folders: list[str] = []
    out: str | None = None  # outputs under out/<folder name>/ (default: each folder's scailflow/)
    options: dict[str, Any] = {}
    schedule: Schedule | None = None

    @model_validator(mode="after")
    def _source(self):
        if not self.root and not self.folders:
            raise ValueError("give a root folder or a list of folders")
        return self


class PipelinesFile(Options):
    defaults: dict[str, Any] = {}
    model: ModelOptions = ModelOptions()
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
    msg = first["msg"].replace("Extra inputs are not permitted", "unknown key").removeprefix("Value error, ")
    return f"{path}{f':{line}' if line else ''}: {key}: {msg}"


def parse_model(cls, data: Any, path: Path, lines: dict[tuple, int], prefix: tuple = ()):
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise InputError(validation_message(path, e, lines, prefix)) from None


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
    for key in ("ckpt_dir", "scail_path"):
        setattr(cfg.model, key, _resolve(base, getattr(cfg.model, key)))
    cfg.model.lora_path = [_resolve(base, p) for p in cfg.model.lora_path]
    for i, entry in enumerate(cfg.pipelines):  # options are JobConfig fields: check them now, with their line
        parse_model(JobConfig, merge(cfg.defaults, entry.options), path, lines, ("pipelines", i, "options"))
    parse_model(JobConfig, cfg.defaults, path, lines, ("defaults",))
    return cfg
