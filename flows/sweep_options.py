"""What a sweep varies, defined once: `scailflow sweep`'s flags, pipelines.yaml's `sweep:` key and `scailflow estimate
--sweep` all read this model.

Every value is checked as the option it varies (a guidance of -1 is refused by SamplingOptions' own rule, naming the
key), so a bad sweep fails before anything runs. On the command line a list is comma-separated (`--guidance 3,5`);
in YAML it is a list (`guidance: [3, 5]`) or the same comma-separated text.

LoRA strengths (`lora_alpha`) vary the LoRAs given with the run's `--lora_path` (or pipelines.yaml's `model:`): a
number is the strength of every LoRA; `A:B` gives one strength per LoRA, in `--lora_path` order.
Light (pydantic and argparse only): `scailflow sweep --help` imports it.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator

from scailflow.errors import InputError
from scailflow.options import Flag, Options, flag_of
from scailflow.scail.options import Preset, SamplingOptions, Solver

VALUES = "V1,V2,..."


def _same_flag(name: str) -> Flag:
    """The sweep flag of a sampling option: the option's own spellings, taking a list."""
    names = flag_of(SamplingOptions.model_fields[name]).names  # the short spelling first: --steps, not --sample_steps
    return Flag(*sorted(names, key=lambda n: n.startswith("--sample_")), metavar=VALUES)


class SweepOptions(Options):
    """A grid of settings run as takes of one folder (`scailflow sweep`; pipelines.yaml `sweep:` per pipeline)."""

    seeds: Annotated[int, Flag("--seeds", metavar="N")] = Field(1, ge=1, le=1000, description="seeds per setting: 1..N")
    lora_alpha: Annotated[list[float | list[float]] | None, Flag("--lora_alpha", "--lora-alpha", metavar=VALUES)] = (
        Field(
            None,
            description="LoRA strengths to sweep, for the LoRAs given with --lora_path: a number is the strength of "
            "every LoRA, A:B one per LoRA in --lora_path order (e.g. 0.6,0.8,1.0 or 0.8:1,0.6:1). Each strength "
            "loads the model with the LoRAs merged at it (the cells are ordered so each loads once)",
        )
    )
    preset: Annotated[list[Preset] | None, _same_flag("preset")] = Field(None, description="presets to sweep")
    steps: Annotated[list[int] | None, _same_flag("steps")] = Field(None, description="step counts to sweep")
    shift: Annotated[list[float] | None, _same_flag("shift")] = Field(None, description="flow shifts to sweep")
    guidance: Annotated[list[float] | None, _same_flag("guidance")] = Field(None, description="CFG scales to sweep")
    solver: Annotated[list[Solver] | None, _same_flag("solver")] = Field(None, description="samplers to sweep")
    pose_strength: Annotated[list[float] | None, _same_flag("pose_strength")] = Field(
        None, description="pose strengths to sweep"
    )
    pose_start: Annotated[list[float] | None, _same_flag("pose_start")] = Field(
        None, description="pose start fractions to sweep"
    )
    pose_end: Annotated[list[float] | None, _same_flag("pose_end")] = Field(
        None, description="pose end fractions to sweep"
    )

    @field_validator("*", mode="before")
    @classmethod
    def _comma_text(cls, v: Any, info) -> Any:
        # `--guidance 3,5` (and `guidance: "3,5"` in YAML): the list's items; `0.8:1` is one strength per LoRA
        if info.field_name == "seeds" or v is None or isinstance(v, bool):
            return v
        if isinstance(v, (str, int, float)):
            v = [t.strip() for t in str(v).split(",")]
            if any(not t for t in v):
                raise ValueError("an empty value between commas")
        if info.field_name == "lora_alpha" and isinstance(v, list):
            return [[p.strip() for p in t.split(":")] if isinstance(t, str) and ":" in t else t for t in v]
        return v

    @field_validator("preset", "steps", "shift", "guidance", "solver", "pose_strength", "pose_start", "pose_end")
    @classmethod
    def _as_the_option(cls, v: list | None, info) -> list | None:
        """Each value checked by the sampling option's own rules (ranges, choices), and no value twice."""
        if v is None:
            return v
        if not v:
            raise ValueError("give at least one value")
        for item in v:
            try:
                SamplingOptions.model_validate({info.field_name: item})
            except ValidationError as e:
                raise ValueError(f"{item!r}: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None
        return _distinct(v)

    @field_validator("lora_alpha")
    @classmethod
    def _strengths(cls, v: list | None) -> list | None:
        if v is None:
            return v
        if not v:
            raise ValueError("give at least one value")
        for item in v:
            for a in item if isinstance(item, list) else [item]:
                if not -10 <= a <= 10:
                    raise ValueError(f"{a:g}: a LoRA strength from -10 to 10")
        return _distinct(v)

    def values(self) -> dict[str, list]:
        """The swept options and their values, in grid order: LoRA strengths (which reload the model) slowest, then
        the preset (which may change the LoRA strengths), then the sampling options."""
        return {k: v for k in SWEPT if (v := getattr(self, k)) is not None}

    def seed_list(self) -> list[int]:
        return list(range(1, self.seeds + 1))

    @property
    def cell_count(self) -> int:
        n = self.seeds
        for v in self.values().values():
            n *= len(v)
        return n


SWEPT: tuple[str, ...] = tuple(k for k in SweepOptions.model_fields if k != "seeds")
SAMPLING_KEYS: tuple[str, ...] = tuple(k for k in SWEPT if k in SamplingOptions.model_fields)  # the rest: model


def _distinct(v: list) -> list:
    seen = []
    for item in v:
        if item in seen:
            raise ValueError(f"{item!r} is given twice")
        seen.append(item)
    return v


# ------------------------------------------------------------------------------------------------ the grid
def parse_values(key: str, text: str) -> list:
    """`0.6,0.8,1.0` -> [0.6, 0.8, 1.0], checked as the option `key` (numbers as numbers)."""
    from scailflow.options import validated

    return getattr(validated(SweepOptions, {key: text}), key)


def cells(values: dict[str, list], seeds: list[int]) -> list[dict]:
    """The grid, seeds varying fastest: [{"pose_strength": 0.5, "seed": 1}, ...]."""
    keys = list(values)
    return [
        dict(zip(keys, combo)) | {"seed": seed}
        for combo in itertools.product(*(values[k] for k in keys))
        for seed in seeds
    ]


def _text(v) -> str:
    if isinstance(v, list):  # one LoRA strength per LoRA
        return ":".join(_text(x) for x in v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def label(cell: dict, values: dict[str, list] | None = None) -> str:
    """`guidance=3 seed=1`: the cell's settings; with `values`, only the keys that take several values (and the seed)."""
    keys = [k for k in cell if values is None or k == "seed" or len(values.get(k, ())) > 1]
    return " ".join(f"{k}={_text(cell[k])}" for k in keys)


def split_cell(cell: dict) -> tuple[dict, dict]:
    """A cell as (sampling options, model options) to override."""
    sampling = {k: v for k, v in cell.items() if k != "lora_alpha"}
    model = {"lora_alpha": cell["lora_alpha"]} if "lora_alpha" in cell else {}
    return sampling, model


def cell_model(model, cell: dict):
    """The model options of one cell (its LoRA strengths), checked: a strength swept with no LoRA, or `A:B` for
    another number of LoRAs, is one InputError."""
    from scailflow.options import validated
    from scailflow.scail.options import ModelOptions

    _, update = split_cell(cell)
    if not update:
        return model
    if not model.lora_path:
        raise InputError("--lora_alpha: a sweep of LoRA strengths needs the LoRAs: give them with --lora_path")
    alpha = update["lora_alpha"]
    return validated(ModelOptions, model.model_dump() | {"lora_alpha": alpha if isinstance(alpha, list) else [alpha]})


# ------------------------------------------------------------------------------------------------ command line
DEST = "sweep."


def add_sweep_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """One flag per field of SweepOptions (its spellings and description), each taking comma-separated text that
    the model splits and checks."""
    for name, field in SweepOptions.model_fields.items():
        flag = flag_of(field)
        parser.add_argument(
            *flag.names,
            dest=DEST + name,
            default=argparse.SUPPRESS,
            type=int if name == "seeds" else str,
            metavar=flag.metavar,
            help=f"{field.description} (default: {field.default})" if name == "seeds" else field.description,
        )


def given_sweep(args: argparse.Namespace) -> dict:
    """The sweep flags the user typed, as SweepOptions' keys."""
    return {k.removeprefix(DEST): v for k, v in vars(args).items() if k.startswith(DEST)}


def parse_sweep_items(items: list[str]) -> dict:
    """`estimate --sweep KEY=V1,V2` items as SweepOptions' keys (`seeds=4`, `guidance=3,5`)."""
    out: dict = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip().removeprefix("--").replace("-", "_")
        if not eq or key not in SweepOptions.model_fields:
            raise InputError(f"--sweep {item!r}: give KEY=V1,V2,... with KEY one of seeds, {', '.join(SWEPT)}")
        out[key] = value
    return out
