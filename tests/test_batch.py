"""`scailflow batch`: every folder of a pipelines.yaml, a bad folder reported (the batch ends Failed) while the others
go on, each folder named in the UI, a summary artifact, GPU slots, schedules."""

from __future__ import annotations

import json

import pytest

from scailflow.errors import InputError
from scailflow.files import write_text_atomic
from scailflow.flows.batch_flow import batch_flow, build_deployments, run_batch
from scailflow.flows.config import load_pipelines
from tests.support.folders import make_folder

pytestmark = pytest.mark.integration  # starts processes/servers/full flows

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
def harness(prefect_harness):
    """Prefect's test harness, shared by the session (conftest)."""


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


def api(path: str, body: dict) -> list[dict]:
    """POST a filter to the Prefect API as JSON (only the fields given: no nulls for the server to judge)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        r = client._client.post(path, json=body)
        r.raise_for_status()
        return r.json()


def test_batch_runs_every_folder_and_skips_the_bad_one(batch):
    results, state = run_batch(str(batch / "pipelines.yaml"), "nightly")
    assert state == "Failed"  # a folder failed: the batch says so (the others still ran)
    ok = {k.rsplit("/", 1)[1]: v for k, v in results.items()}
    assert set(ok) == {"a", "b", "c-no-video"}
    assert "no driving video" in ok["c-no-video"]["error"]
    for name in ("a", "b"):
        assert ok[name]["states"]["generate"] == "Completed"
        assert (batch / "results" / name / "output.mp4").is_file()  # out: results/<folder>
        assert set(ok[name]["stage_seconds"]) == {"pose", "masks", "prompt", "generate"}
        assert ok[name]["stage_seconds"]["generate"] > 0 and ok[name]["gpu_wait_s"] >= 0
    assert not (batch / "clips" / "a" / "scailflow").exists()
    # both GPU slots exist, one generation each
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        limits = {lim.name: lim.limit for lim in client.read_global_concurrency_limits()}
    assert limits["scailflow-gpu-0"] == 1 and limits["scailflow-gpu-1"] == 1


def test_batch_in_the_ui_names_each_folder_and_sums_up(batch):
    (run,) = api(
        "/flow_runs/filter",
        {"flow_runs": {"name": {"any_": ["batch-nightly"]}}, "sort": "START_TIME_DESC", "limit": 1},
    )
    assert run["state"]["type"] == "FAILED" and "c-no-video" in run["state"]["message"]
    tasks = api("/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 50})
    stages = ("pose", "masks", "prompt", "generate")
    assert {t["name"] for t in tasks} == {f"{stage} · {f}" for stage in stages for f in "ab"}
    assert {t["state"]["type"] for t in tasks} == {"COMPLETED"}  # nothing left NotReady
    (table,) = api(
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": ["scailflow-batch-nightly"]}}, "sort": "CREATED_DESC", "limit": 1},
    )
    rows = {r["folder"]: r for r in json.loads(table["data"])}
    assert rows["a"]["state"] == "Completed" and rows["a"]["video"].endswith("output.mp4")
    assert rows["c-no-video"]["state"] == "Failed" and "no driving video" in rows["c-no-video"]["reason"]
    assert isinstance(rows["b"]["seconds"], float)


def test_a_folder_failing_in_a_stage_fails_the_batch_not_the_others(tmp_path, monkeypatch):
    """Masks fail for one folder: it gets no generation run (none left NotReady), its own artifact with the
    reason; the other folder completes; the batch ends Failed."""
    from scailflow import masks

    real = masks.make_masks

    def no_person_in_bad(ref, *a, **k):
        if ref.parent.name == "bad":
            raise masks.NoPersonError(f"no person found in the reference image {ref}")
        return real(ref, *a, **k)

    monkeypatch.setattr(masks, "make_masks", no_person_in_bad)
    clips = tmp_path / "clips"
    clips.mkdir()
    make_folder(clips, "bad", frames=5, size=64)
    make_folder(clips, "good", frames=5, size=64)
    write_text_atomic(tmp_path / "p.yaml", "model: {model: tiny-random}\npipelines:\n  - name: two\n    root: clips\n")
    results, state = run_batch(str(tmp_path / "p.yaml"))
    assert state == "Failed"
    good, bad = results[str(clips / "good")], results[str(clips / "bad")]
    assert good["state"] == "Completed" and (clips / "good" / "scailflow" / "output.mp4").is_file()
    assert bad["failed_stage"] == "masks" and "no person found" in bad["error"]
    assert bad["states"]["generate"] == "NotRun"
    run_json = json.loads((clips / "bad" / "scailflow" / "run.json").read_text())
    assert run_json["state"] == "Failed" and run_json["failed_stage"] == "masks"
    runs = api("/task_runs/filter", {"task_runs": {"name": {"any_": ["generate · bad", "masks · bad"]}}, "limit": 9})
    assert [(t["name"], t["state"]["type"]) for t in runs] == [("masks · bad", "FAILED")]  # no generation run
    (art,) = api(
        "/artifacts/filter", {"artifacts": {"key": {"any_": ["scailflow-bad"]}}, "sort": "CREATED_DESC", "limit": 1}
    )
    assert "Failed" in art["data"] and "no person found" in art["data"]


def test_batch_second_run_is_cached(batch):
    results, _ = run_batch(str(batch / "pipelines.yaml"), "nightly")
    done = [v for v in results.values() if "error" not in v]
    assert len(done) == 2 and all(set(v["states"].values()) == {"Cached"} for v in done)


def test_unknown_pipeline_name(batch):
    with pytest.raises(InputError, match="no pipeline named 'weekly'"):
        batch_flow(str(batch / "pipelines.yaml"), "weekly")
    with pytest.raises(InputError, match="no pipeline named 'weekly'"):
        run_batch(str(batch / "pipelines.yaml"), "weekly")


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
