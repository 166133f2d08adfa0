"""Warm GPU workers: a long-lived process per GPU keeps the loaded SCAIL-2 pipeline and runs every generation
sent to it (Prefect background tasks: `generate_task.delay(...)` from the flow, `task_worker.serve` here).

    CUDA_VISIBLE_DEVICES=0 scailflow worker --ckpt_dir ... --scail_path ...   # one per GPU, any machine
    scailflow batch pipelines.yaml --workers                                   # generation goes to the workers

Needs a Prefect server (`scailflow server`, or PREFECT_API_URL). The model loads once, at start, and the load
time is reported once; SIGUSR1 frees it (and its GPU memory) until the next generation needs it.
"""

from __future__ import annotations

import logging
import signal
import time

from scailflow.errors import InputError
from scailflow.scail.options import ModelOptions
from scailflow.tasks.generate import generate_task
from scailflow.tasks.gpu import prefect_server_present, release_pipelines, warm_pipeline

log = logging.getLogger("scailflow.flow")


def serve_generation(model: ModelOptions, timeout_s: float | None = None, preload: bool = True) -> None:
    """Preload the model, then run generation tasks one at a time until stopped (or `timeout_s` passes)."""
    import os

    from prefect.task_worker import serve

    if not prefect_server_present():
        raise InputError("a warm worker needs a Prefect server: start `scailflow server` (or set PREFECT_API_URL)")
    if preload:
        t0 = time.perf_counter()
        warm_pipeline(model)
        print(
            f"worker {os.getpid()}: model loaded in {time.perf_counter() - t0:.1f} s; waiting for generations",
            flush=True,
        )

    def free(signum, frame):
        n = release_pipelines()
        log.info("worker %d: freed %d loaded pipeline(s)", os.getpid(), n)

    signal.signal(signal.SIGUSR1, free)
    serve(generate_task, limit=1, timeout=timeout_s)
