"""Warm GPU workers: a long-lived `scailflow worker` loads the model once and runs every generation of a batch."""

from __future__ import annotations

import os

import pytest
from prefect.settings import PREFECT_API_URL

from scailflow.files import write_text_atomic
from scailflow.flows.batch_flow import batch_flow
from tests.support.folders import make_folder
from tests.support.processes import Process

pytestmark = pytest.mark.integration  # starts processes/servers/full flows


def test_batch_generation_runs_on_one_warm_worker(tmp_path, monkeypatch, prefect_harness):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a", "b", "c"):
        make_folder(clips, name, frames=5, size=64)
    write_text_atomic(
        tmp_path / "pipelines.yaml",
        "model: {model: tiny-random}\nworkers: true\npipelines:\n"
        "  - name: w\n    root: clips\n    options: {sampling: {steps: 1, target_h: 32, target_w: 32}}\n",
    )
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())  # the session's test harness
    with Process(["worker", "--model", "tiny-random", "--timeout", "300"], env=dict(os.environ)) as worker:
        worker.wait_for("model loaded", 120)
        # no wait for its subscription: the server queues each generation until a worker takes it
        results = batch_flow(str(tmp_path / "pipelines.yaml"))
        worker.proc.terminate()
        worker.finish(30)
    lines = worker.lines
    assert all("error" not in r for r in results.values()), results
    assert {r["generated_by_pid"] for r in results.values()} == {worker.pid}
    assert {r["model_loads_in_that_process"] for r in results.values()} == {1}  # loaded once, warm after
    assert sum("waiting for generations" in ln for ln in lines) == 1  # load time reported once


def test_a_gpu_slot_left_taken_by_a_vanished_run_is_freed(prefect_harness, caplog):
    """A generation's Prefect GPU slot outlives its run when the server restarts under it (the lease is lost, so the
    repossessor never frees it): the next generation on this machine must not wait forever for it."""
    import threading

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from scailflow.tasks.gpu import GPU_SLOT, ensure_gpu_slots, gpu_slot

    ensure_gpu_slots(1)
    name = GPU_SLOT.format(index=0)
    with get_client(sync_client=True) as client:  # what a restarted server holds for a run that is gone
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=1))
    entered = threading.Event()

    def generation():
        with gpu_slot(0):
            entered.set()

    with caplog.at_level("WARNING", logger="scailflow.scail"):
        worker = threading.Thread(target=generation, daemon=True)
        worker.start()
        assert entered.wait(60), "the generation still waits for the leftover slot"
        worker.join(30)
    assert f"{name} was still taken by a run that is gone" in caplog.text
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).active_slots == 0  # released after the generation


def test_waiting_on_a_handed_over_task_that_has_no_state_yet_asks_again():
    """Prefect's distributed future raises at once when its task run has no state yet (just after `.delay`): the
    folder waits again; any other error, or one that does not go away, still surfaces."""
    from scailflow.flows.folder_flow import wait_for

    class Future:
        def __init__(self, fails, message="Task run 1 has no state which means it hasn't started yet."):
            self.fails, self.message, self.calls = fails, message, 0

        def wait(self):
            self.calls += 1
            if self.calls <= self.fails:
                raise RuntimeError(self.message)

    f = Future(3)
    wait_for(f)
    assert f.calls == 4
    with pytest.raises(RuntimeError, match="has no state"):
        wait_for(Future(10), tries=5)
    with pytest.raises(RuntimeError, match="other"):
        wait_for(Future(1, "other"))
