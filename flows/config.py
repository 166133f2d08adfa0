"""job.yaml and pipelines.yaml: the option models of every stage, composed and validated; errors name the file, the
line and the key.

Both files may come from strangers: they are read with a size limit and a limit on what their aliases expand to (a
nine-line "billion laughs" file fails at once, naming the file), with the safe loader (no tags that build objects),
and the file paths a folder's job.yaml names must stay inside the folder (flows/folder.py `folder_file`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from scailflow.errors import InputError
from scailflow.files import read_text
from scailflow.flows.sweep_options import SweepOptions
from scailflow.masks.options import MaskOptions
from scailflow.options import DrivingMode, Flag, Mode, Options, Stage, file_fields, merge
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


class BudgetOptions(Options):
    """Cost before a run (command line only): `scailflow estimate` takes gpu, gpu_price and max_gpu_minutes;
    `scailflow run` and `batch` take all four."""

    dry_run: Annotated[bool, Flag("--dry-run", "--dry_run")] = Field(
        False, description="print the predicted seconds per folder and stage, GPU-minutes and cost; run nothing"
    )
    max_gpu_minutes: Annotated[float | None, Flag("--max-gpu-minutes", "--max_gpu_minutes", metavar="N")] = Field(
        None, gt=0, description="refuse with one line (exit 3), before anything starts, when predicted over N"
    )
    gpu: Annotated[Literal["h100", "h200"] | None, Flag("--gpu")] = Field(
        None, description="the GPU kind the prediction is for (default: this machine's)"
    )
    gpu_price: Annotated[float | None, Flag("--gpu-price", "--gpu_price", metavar="USD_PER_HOUR")] = Field(
        None, ge=0, description="also print the cost at this price per GPU-hour"
    )

    @property
    def checked(self) -> bool:
        """Whether a run must be estimated before it starts."""
        return self.dry_run or self.max_gpu_minutes is not None


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
    sweep: SweepOptions | None = None  # run each folder as a sweep (`scailflow sweep`'s grid): takes + contact sheet

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


MAX_YAML_BYTES = 256 * 1024
MAX_YAML_NODES = 20_000  # values after alias expansion: real files hold a few hundred
MAX_YAML_DEPTH = 64


def _expanded_size(path: Path, node: yaml.Node) -> int:
    """How many values `node` stands for once every alias is expanded (what a consumer walking it would see)."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node, depth: int, stack: set[int]) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        if id(n) in stack:
            raise InputError(f"{path}:{n.start_mark.line + 1}: an alias refers to the value that contains it")
        if depth > MAX_YAML_DEPTH:
            raise InputError(f"{path}:{n.start_mark.line + 1}: nested more than {MAX_YAML_DEPTH} levels deep")
        total = 1
        if isinstance(n, (yaml.MappingNode, yaml.SequenceNode)):
            stack.add(id(n))
            children = [c for kv in n.value for c in kv] if isinstance(n, yaml.MappingNode) else n.value
            for c in children:
                total += size(c, depth + 1, stack)
                if total > MAX_YAML_NODES:
                    raise InputError(
                        f"{path}:{n.start_mark.line + 1}: expands to more than {MAX_YAML_NODES} values "
                        "(nested aliases?); not read"
                    )
            stack.discard(id(n))
        sizes[id(n)] = total
        return total

    return size(node, 0, set())


def load_yaml(path: str | os.PathLike) -> tuple[Any, dict[tuple, int]]:
    """Parse a YAML file safely; returns the data and a map from key paths to line numbers. A file over
    MAX_YAML_BYTES, one that is not UTF-8, or one whose aliases expand past MAX_YAML_NODES is one InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    text = read_text(path, "YAML file", MAX_YAML_BYTES)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        _expanded_size(path, node)
        data = loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise InputError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except RecursionError:
        raise InputError(f"{path}: nested too deeply to read") from None
    finally:
        loader.dispose()
    return (data if data is not None else {}), _key_lines(node)


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


def _file_options(data: dict, resolve) -> dict:
    """`data` with every FileOption value (sam2_checkpoint, the pose files, examples) replaced by `resolve(key,
    value)`; other values untouched, nothing added."""
    out = dict(data)
    for key in file_fields(JobConfig):
        node = out
        for part in key[:-1]:
            if not isinstance(node.get(part), dict):
                break
            node[part] = dict(node[part])
            node = node[part]
        else:
            if isinstance(node.get(key[-1]), str) and node[key[-1]]:
                node[key[-1]] = resolve(key, node[key[-1]])
    return out


def load_job(folder: Path, base: dict | None = None, overrides: dict | None = None) -> JobConfig:
    """Shared defaults <- the folder's job.yaml <- command-line overrides, validated as one JobConfig.

    A file path in job.yaml is relative to the folder and must stay inside it (or in a directory the operator
    allowed); `base` and `overrides` come from the operator (pipelines.yaml, the command line) and may name any file.
    """
    data = dict(base or {})
    path = folder / "job.yaml"
    lines: dict[tuple, int] = {}
    if path.is_file():
        own, lines = load_yaml(path)
        if not isinstance(own, dict):
            raise InputError(f"{path}:1: must be a mapping of options")

        from scailflow.flows.folder import folder_file  # here: `scailflow run --help` reads this module, not media

        def inside(key: tuple, value: str) -> str:
            where = f"{path}:{lines[key]}" if key in lines else str(path)
            return str(folder_file(folder, value, f"{where}: {'.'.join(key)}"))

        data = merge(data, _file_options(own, inside))
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

    def relative(key: tuple, value: str) -> str:
        return _resolve(base, value)

    cfg.defaults = _file_options(cfg.defaults, relative)
    for entry in cfg.pipelines:
        entry.options = _file_options(entry.options, relative)
    for i, entry in enumerate(cfg.pipelines):  # options are JobConfig fields: check them now, with their line
        parse_model(JobConfig, merge(cfg.defaults, entry.options), path, lines, ("pipelines", i, "options"))
    parse_model(JobConfig, cfg.defaults, path, lines, ("defaults",))
    return cfg
