"""`scailflow batch`: every folder of a pipelines.yaml, a bad folder reported and skipped, GPU slots, schedules."""

from __future__ import annotations

import pytest
from prefect.testing.utilities import prefect_test_harness

from scailflow.errors import InputError
from scailflow.files import write_text_atomic
from scailflow.flows.batch_flow import batch_flow, build_deployments
from scailflow.flows.config import load_pipelines
from tests.test_flows import make_folder

PIPELINES = """\
model: {model: tiny-random}
gpus: 2
defaults:
  sampling: {steps: 1, target_h: 64, target_w: 64, seed: 1}
pipelines:
  - name: nightly
    root: clips
    out: results
    schedule: {cron: "0 2 * * *"}
  - name: hourly
    folders: [clips/b]
    options: {sampling: {steps: 2}}
    schedule: {interval_seconds: 3600}
"""


@pytest.fixture(scope="module", autouse=True)
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    clips = root / "clips"
    clips.mkdir()
    make_folder(clips, "a", frames=5)
    make_folder(clips, "b", frames=5)
    bad = make_folder(clips, "c-no-video", frames=5)
    (bad / "driving.mp4").unlink()
    write_text_atomic(root / "pipelines.yaml", PIPELINES)
    return root


def test_batch_runs_every_folder_and_skips_the_bad_one(batch):
    results = batch_flow(str(batch / "pipelines.yaml"), "nightly")
    ok = {k.rsplit("/", 1)[1]: v for k, v in results.items()}
    assert set(ok) == {"a", "b", "c-no-video"}
    assert "no driving video" in ok["c-no-video"]["error"]
    for name in ("a", "b"):
        assert ok[name]["states"]["generate"] == "Completed"
        assert (batch / "results" / name / "output.mp4").is_file()  # out: results/<folder>
    assert not (batch / "clips" / "a" / "scailflow").exists()
    # both GPU slots exist, one generation each
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        limits = {lim.name: lim.limit for lim in client.read_global_concurrency_limits()}
    assert limits["scailflow-gpu-0"] == 1 and limits["scailflow-gpu-1"] == 1


def test_batch_second_run_is_cached(batch):
    results = batch_flow(str(batch / "pipelines.yaml"), "nightly")
    done = [v for v in results.values() if "error" not in v]
    assert len(done) == 2 and all(set(v["states"].values()) == {"Cached"} for v in done)


def test_unknown_pipeline_name(batch):
    with pytest.raises(InputError, match="no pipeline named 'weekly'"):
        batch_flow(str(batch / "pipelines.yaml"), "weekly")


def test_schedules_become_deployments(batch):
    deployments = {d.name: d for d in build_deployments(str(batch / "pipelines.yaml"))}
    assert set(deployments) == {"nightly", "hourly"}
    nightly = deployments["nightly"].schedules[0].schedule
    hourly = deployments["hourly"].schedules[0].schedule
    assert nightly.cron == "0 2 * * *" and hourly.interval.total_seconds() == 3600
    assert deployments["hourly"].parameters["pipeline"] == "hourly"


def test_paths_are_relative_to_the_file(batch):
    cfg = load_pipelines(batch / "pipelines.yaml")
    assert cfg.pipelines[0].root == str(batch / "clips") and cfg.pipelines[1].folders == [str(batch / "clips" / "b")]
