"""One definition per option: pydantic models whose fields carry their command-line flags.

Every option group is one model (`SamplingOptions`, `ModelOptions` in scail/options.py, `MaskOptions`,
`PoseOptions`, `PromptOptions` beside their stage, `JobConfig` in flows/config.py). From each model come:
the argparse flags (`add_flags`), the YAML validation of job.yaml / pipelines.yaml, the JSON Schema, and the typed
value the stage functions take. A field gets a flag by carrying `Flag(...)` in its `Annotated` metadata:

    steps: Annotated[Optional[int], Flag("--sample_steps", "--steps")] = Field(None, ge=1, description="...")

Light on purpose (pydantic and argparse only): `scailflow --help` imports it.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from scailflow.errors import InputError

Mode = Literal["animation", "replacement"]
DrivingMode = Literal["end-to-end", "pose"]
Stage = Literal["pose", "masks", "prompt", "generate"]  # a folder run's stages, in order
STAGES: tuple[str, ...] = typing.get_args(Stage)


@dataclass(frozen=True)
class Flag:
    """The command-line spellings of an option (first one shown in errors). `command`: the one command whose
    parser lists it (e.g. the prompt enhancer's `--model`, which `scailflow run` must not take for its own)."""

    names: tuple[str, ...]
    metavar: str | None = None
    command: str | None = None

    def __init__(self, *names: str, metavar: str | None = None, command: str | None = None):
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "metavar", metavar)
        object.__setattr__(self, "command", command)


@dataclass(frozen=True)
class FlagAlias:
    """Another command-line spelling of an option whose value comes in another form, e.g. the official generate.py's
    `--offload_model True|False` for `offload`: `convert` turns the typed text into the field's value (raising
    ValueError for text it does not take). argparse hands the result to the same field, so the option is still
    defined once."""

    names: tuple[str, ...]
    convert: Callable[[str], Any]
    metavar: str | None = None
    help: str = ""

    def __init__(self, *names: str, convert: Callable[[str], Any], metavar: str | None = None, help: str = ""):
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "convert", convert)
        object.__setattr__(self, "metavar", metavar)
        object.__setattr__(self, "help", help)


def str2bool(text: str) -> bool:
    """yes/true/t/y/1 and no/false/f/n/0, any case (the official scripts' str2bool)."""
    value = str(text).strip().lower()
    if value in ("yes", "true", "t", "y", "1"):
        return True
    if value in ("no", "false", "f", "n", "0"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {text!r}")


def _any_case(values: tuple) -> Callable[[str], Any]:
    """argparse type for a choice: typed in any case, handed on as the choice's own spelling (--model scail-14b)."""
    lower = {str(v).lower(): v for v in values}

    def convert(text: str):
        return lower.get(text.lower(), text)

    convert.__name__ = "choice"
    return convert


class FileOption:
    """Marks a field that names a file. From a folder's job.yaml such a path must stay inside the folder (or a
    directory the operator allowed); the command line, pipelines.yaml and the environment may name any file
    (flows/folder.py `folder_file` decides)."""


def file_fields(model: type[BaseModel], prefix: tuple = ()) -> list[tuple]:
    """Key paths of every `FileOption` field of `model` and its nested option groups."""
    out: list[tuple] = []
    for name, field in model.model_fields.items():
        sub = submodel(field.annotation)
        if sub is not None:
            out += file_fields(sub, prefix + (name,))
        elif any(isinstance(m, FileOption) for m in field.metadata):
            out.append(prefix + (name,))
    return out


class Options(BaseModel):
    """Base of every option group: unknown keys are errors (a typo in job.yaml is caught, not ignored)."""

    model_config = ConfigDict(extra="forbid")


def _unwrap_optional(ann: Any) -> Any:
    if get_origin(ann) in (Union, types.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


def submodel(ann: Any) -> type[BaseModel] | None:
    ann = _unwrap_optional(ann)
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def flag_of(field) -> Flag | None:
    return next((m for m in field.metadata if isinstance(m, Flag)), None)


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    model: type[BaseModel],
    prefix: str = "",
    only: tuple[str, ...] | None = None,
    defaults: dict[str, Any] | None = None,
    *,
    command: str | None = None,
    required: tuple[str, ...] = (),
) -> None:
    """Add one argparse option per flagged field of `model` (and of its nested option groups).

    Flags default to "not given" (argparse.SUPPRESS): `given()` returns only what the user typed, so a flag
    overrides job.yaml / pipelines.yaml and an absent flag leaves them (or the model's default) alone. `only`: just
    these fields of `model`. `defaults` (dest -> value): a command's own defaults, shown in the help instead of the
    model's (the command passes them to `from_flags` as its base). `command`: also the flags that belong to this
    command alone (Flag.command). `required`: fields this command cannot do without."""
    for name, field in model.model_fields.items():
        if only is not None and name not in only:
            continue
        sub = submodel(field.annotation)
        if sub is not None:
            add_flags(parser, sub, f"{prefix}{name}.", defaults=defaults, command=command)
            continue
        flag = flag_of(field)
        if flag is None or flag.command not in (None, command):
            continue
        ann = _unwrap_optional(field.annotation)
        default = (defaults or {}).get(prefix + name, field.get_default(call_default_factory=True))
        help_text = field.description or ""
        if default not in (None, False, [], ""):
            help_text += f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": prefix + name, "default": argparse.SUPPRESS, "help": help_text.strip()}
        if name in required:
            kwargs["required"] = True
        if ann is bool:  # --x / --no-x on the first spelling; other spellings of --x are accepted, not listed
            parser.add_argument(flag.names[0], action=argparse.BooleanOptionalAction, **kwargs)
            if flag.names[1:]:
                parser.add_argument(
                    *flag.names[1:],
                    action="store_true",
                    dest=prefix + name,
                    default=argparse.SUPPRESS,
                    help=argparse.SUPPRESS,
                )
            continue
        kwargs["metavar"] = flag.metavar or name.upper()
        if get_origin(ann) is Literal:
            kwargs.pop("metavar")
            kwargs["choices"] = get_args(ann)
            kwargs["type"] = _any_case(get_args(ann))
        elif get_origin(ann) is list:
            (elem,) = get_args(ann) or (str,)
            elem = _unwrap_optional(elem)
            if get_origin(elem) is Literal:  # a list of choices: --rerun pose masks, or --rerun pose --rerun masks
                kwargs.pop("metavar")
                kwargs.update(nargs="+", action="extend", choices=get_args(elem), type=_any_case(get_args(elem)))
            else:
                kwargs.update(nargs="+", type=elem)
        else:  # a union (e.g. a rate or "source") is passed on as text: the model validates it
            kwargs["type"] = ann if isinstance(ann, type) else str
        parser.add_argument(*flag.names, **kwargs)
        for alias in (m for m in field.metadata if isinstance(m, FlagAlias)):
            parser.add_argument(
                *alias.names,
                dest=prefix + name,
                default=argparse.SUPPRESS,
                type=_alias_type(alias),
                metavar=alias.metavar,
                help=alias.help or f"same as {flag.names[0]}",
            )


def _alias_type(alias: FlagAlias) -> Callable[[str], Any]:
    def convert(text: str):
        try:
            return alias.convert(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = alias.names[0]
    return convert


def given(args: argparse.Namespace, model: type[BaseModel]) -> dict:
    """The options of `model` the user typed, as a nested dict (dests like "sampling.steps" become nesting)."""
    out: dict = {}
    for dest, value in vars(args).items():
        path = dest.split(".")
        if not _has_path(model, path):
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _has_path(model: type[BaseModel], path: list[str]) -> bool:
    field = model.model_fields.get(path[0])
    if field is None:
        return False
    if len(path) == 1:
        return flag_of(field) is not None
    sub = submodel(field.annotation)
    return sub is not None and _has_path(sub, path[1:])


def flag_name(model: type[BaseModel], loc: tuple) -> str | None:
    """The first command-line spelling of the field at `loc`, if it has one."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        sub = submodel(field.annotation) if field else None
        if sub is None:
            return None
        model = sub
    field = model.model_fields.get(str(loc[-1])) if loc else None
    flag = flag_of(field) if field else None
    return flag.names[0] if flag else None


def from_flags(model: type[BaseModel], args: argparse.Namespace, base: dict | None = None):
    """Validate `base` (e.g. pipelines.yaml's `model:`) overridden by the flags of `model` the user typed."""
    return validated(model, merge(base or {}, given(args, model)))


def validated(model: type[BaseModel], data: dict):
    """`model` from `data`, or one InputError line naming the option (its flag where it has one)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = flag_name(model, tuple(first["loc"])) or ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise InputError(f"{where}: {message}" if where else message) from None


def merge(base: dict, over: dict) -> dict:
    """Deep-merge `over` onto `base` (dicts merge, everything else replaces)."""
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def choices(literal: Any) -> tuple:
    """The values of a Literal type (one definition of each set of choices)."""
    return typing.get_args(literal)
