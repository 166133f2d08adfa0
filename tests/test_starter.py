"""`scailflow init` and `scailflow schema`: what a user starts from, and what an editor completes from."""

from __future__ import annotations

import functools
import json

import pytest

from scailflow.flows.config import JobConfig, PipelinesFile, load_job, load_pipelines
from tests.support.processes import cli as run_cli

pytestmark = pytest.mark.integration  # starts processes/servers/full flows

cli = functools.partial(run_cli, timeout=120)


def uncomment(text: str) -> str:
    """Every commented option uncommented (the header, the comment lines before the first key, dropped)."""
    lines = text.splitlines()
    first_key = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    return "\n".join(line.removeprefix("# ") for line in lines[first_key:])


def test_init_writes_a_job_yaml_that_loads_and_lists_every_option(tmp_path):
    r = cli("init", tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "job.yaml").read_text()
    assert load_job(tmp_path) == JobConfig()  # as written: valid, and the defaults
    # every option is there with its default: uncommenting all of it still loads, to the same defaults
    (tmp_path / "job.yaml").write_text(uncomment(text))
    assert load_job(tmp_path) == JobConfig()
    for key in ("target_h", "backend", "instruction", "dwpose_det", "segment_frames"):
        assert f"{key}:" in text
    again = cli("init", tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr


def test_init_pipelines_yaml_loads(tmp_path):
    (tmp_path / "clips").mkdir()
    assert cli("init", tmp_path, "--pipelines").returncode == 0
    text = (tmp_path / "pipelines.yaml").read_text()
    cfg = load_pipelines(tmp_path / "pipelines.yaml")
    assert cfg.pipelines[0].name == "nightly" and cfg.model.model == "scail2"
    (tmp_path / "pipelines.yaml").write_text(uncomment(text))
    assert load_pipelines(tmp_path / "pipelines.yaml").model == cfg.model


def test_schema_is_the_models_json_schema():
    for kind, model in (("job", JobConfig), ("pipelines", PipelinesFile)):
        r = cli("schema", kind)
        assert r.returncode == 0, r.stderr
        schema = json.loads(r.stdout)
        assert schema == model.model_json_schema()
        assert schema["additionalProperties"] is False and set(schema["properties"]) == set(model.model_fields)
    job = json.loads(cli("schema", "job").stdout)
    sampling = job["$defs"]["SamplingOptions"]["properties"]
    from scailflow.scail.options import SOLVERS

    assert sampling["solver"]["anyOf"][0]["enum"] == list(SOLVERS)  # choices an editor can offer
    assert job["properties"]["mode"]["enum"] == ["animation", "replacement"]  # and the modes
