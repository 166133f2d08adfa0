"""`scailflow init` and `scailflow schema`: a commented job.yaml / pipelines.yaml and JSON Schemas, both made from the
option models themselves (flows/config.py), so they cannot drift from what the loader accepts."""

from __future__ import annotations

import json

from pydantic import BaseModel

from scailflow.flows.config import JobConfig, PipelinesFile
from scailflow.options import submodel

SCHEMAS = {"job": JobConfig, "pipelines": PipelinesFile}
SCHEMA_URL_HINT = "scailflow schema {kind} > {kind}.schema.json"

PIPELINES_EXAMPLE = """\
# scailflow pipelines.yaml: `scailflow batch pipelines.yaml`, or `scailflow serve pipelines.yaml` for the schedules.
# Paths are relative to this file. `scailflow schema pipelines` prints the JSON Schema for editor completion.
model:                     # the model options (same keys as the model flags: scailflow run --help)
{model}
gpus: 1                    # one generation per GPU at a time
workers: false             # true: send generation to warm GPU workers (`scailflow worker`, one per GPU)
defaults:                  # job.yaml keys shared by every folder (a folder's job.yaml wins)
  sampling:
    preset: quality
pipelines:
  - name: nightly
    root: clips            # every folder under clips/ that holds a ref image
    # folders: [clips/a, clips/b]   # or an explicit list
    # out: renders         # outputs under renders/<folder>/ (default: each folder's scailflow/)
    # options: {{sampling: {{preset: fast}}}}
    # schedule: {{cron: "0 2 * * *"}}   # or {{interval_seconds: 3600}}
    # sweep: {{seeds: 2, guidance: [3, 5]}}   # each folder as `scailflow sweep`: a take per setting and seed, one sheet
"""


def commented_yaml(model: type[BaseModel], indent: int = 0, keep: tuple[str, ...] = ()) -> list[str]:
    """One line per option, `key: default   # description`, commented out (`# ` at the start of the line) unless
    its top-level name is in `keep`; option groups become indented blocks. Removing the leading `# ` of every line
    gives a valid file of the defaults."""
    lines: list[str] = []
    for name, field in model.model_fields.items():
        mark = "" if name in keep else "# "
        sub = submodel(field.annotation)
        if sub is not None:
            lines.append(f"{mark}{'  ' * indent}{name}:")
            lines += [line if mark else line.removeprefix("# ") for line in commented_yaml(sub, indent + 1)]
            continue
        default = json.dumps(field.get_default(call_default_factory=True))  # JSON scalars are YAML scalars
        note = f"   # {field.description}" if field.description else ""
        lines.append(f"{mark}{'  ' * indent}{name}: {default}{note}")
    return lines


def job_yaml() -> str:
    head = [
        "# scailflow job.yaml: this folder's options (every key is optional; the values shown are the defaults).",
        "# `scailflow run --help` lists the flags that override them; "
        "`scailflow schema job` prints the JSON Schema for editor completion.",
    ]
    return "\n".join(head + commented_yaml(JobConfig, keep=("mode", "driving"))) + "\n"


def pipelines_yaml() -> str:
    from scailflow.scail.options import ModelOptions

    model = "\n".join(commented_yaml(ModelOptions, indent=1, keep=("model",)))
    return PIPELINES_EXAMPLE.format(model=model)


def json_schema(kind: str) -> str:
    return json.dumps(SCHEMAS[kind].model_json_schema(), indent=2)
