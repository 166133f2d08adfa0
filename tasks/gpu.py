"""What generation needs around the model, kept out of the task: the GPU slot, the warm pipelines, OOM handling.

- `gpu_slot(index)`: always an OS file lock per GPU (released by the kernel when the process dies, so a killed worker
  never leaves the GPU taken): that lock is what keeps two generations off one GPU. With a Prefect server also its
  global concurrency slot `scailflow-gpu-N` (the GPU's use, visible in the UI), leased 60 s at a time so the server's
  repossessor frees it after a crash; a slot still taken when this machine's lock is free is a leftover (a server
  restart loses its lease) and is freed. The temporary API of a server-less run keeps leases in memory and never
  repossesses them, so it is not used there.
- `warm_pipeline(opts)`: one loaded pipeline per model options per process, kept (a warm worker loads once).
- `read_weights_ahead(opts)`: a flow that will generate here starts the disk on the weights while it preprocesses.
- `generate_on_gpu(...)`: one generation; on CUDA out-of-memory with offload none (and `oom_retry_offload`), one
  more try with block offload.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from pathlib import Path

from scailflow.errors import is_out_of_memory
from scailflow.scail.options import ModelOptions

log = logging.getLogger("scailflow.scail")

GPU_SLOT = "scailflow-gpu-{index}"
_PIPELINES: dict[str, object] = {}
_LOAD_LOCK = threading.Lock()
LOADS = {"count": 0}  # model loads in this process: a warm worker loads once, then serves every generation


def warm_pipeline(opts: ModelOptions, logger: logging.Logger = log):
    """The loaded pipeline for these model options, loaded once per process and kept."""
    from scailflow.scail.loading import load_pipeline

    key = opts.model_dump_json(exclude={"oom_retry_offload"})  # a retry policy, not a load option
    with _LOAD_LOCK:
        if key not in _PIPELINES:
            _PIPELINES[key] = load_pipeline(opts)
            LOADS["count"] += 1
            logger.info(
                "model loaded in %.1f s (kept warm for later runs in this process)", _PIPELINES[key].load_seconds
            )
        return _PIPELINES[key]


def read_weights_ahead(opts: ModelOptions, out_dirs: list[Path]):
    """Read the release's weight files into the page cache in the background (scail/prefetch.py), so the first
    generation's load overlaps the folders' preprocessing; not when this process holds the pipeline already, nor when
    every output folder has its video (a re-run is most likely served from the cache)."""
    from scailflow.layout import OUTPUT
    from scailflow.scail.prefetch import start
    from scailflow.scail.release_files import model_weight_files

    if opts.model_dump_json(exclude={"oom_retry_offload"}) in _PIPELINES:
        return None
    if all((Path(d) / OUTPUT).is_file() for d in out_dirs):
        return None
    return start(model_weight_files(opts))  # the reader, or None


def release_pipelines() -> int:
    """Free every warm pipeline (and its GPU memory); returns how many were dropped."""
    import gc

    import torch

    with _LOAD_LOCK:
        n = len(_PIPELINES)
        _PIPELINES.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return n


def prefect_server_present() -> bool:
    """A real Prefect API (a server, or the test harness) rather than the temporary one of a server-less run."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def ensure_gpu_slots(gpus: int) -> None:
    """One global concurrency limit of 1 per GPU (created if missing), so generations never share a GPU.
    Only with a Prefect server (see `gpu_slot`)."""
    if not prefect_server_present():
        return
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for i in range(gpus):
            name = GPU_SLOT.format(index=i)
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def free_stale_slot(index: int) -> bool:
    """Called holding this machine's lock on GPU `index`, so no generation here holds that GPU: a slot Prefect still
    counts as taken is a leftover of a run that is gone (killed, or whose lease the server lost by restarting, which
    Prefect's lease repossessor then never sees) and would keep every later generation waiting. Freed, with a warning;
    returns whether it was."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    name = GPU_SLOT.format(index=index)
    with get_client(sync_client=True) as client:
        try:
            slot = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return False
        if slot.active_slots < slot.limit:
            return False
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
    log.warning("%s was still taken by a run that is gone (killed, or the server restarted under it): freed", name)
    return True


@contextlib.contextmanager
def gpu_slot(index: int):
    """Hold GPU `index` for one generation (see the module docstring)."""
    home = Path(os.environ.get("SCAILFLOW_HOME", Path.home() / ".scailflow")) / "locks"
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / f"gpu-{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if prefect_server_present():
            from prefect.concurrency.sync import concurrency

            free_stale_slot(index)
            with concurrency(GPU_SLOT.format(index=index), occupy=1, lease_duration=60):
                yield
        else:
            yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def generate_on_gpu(
    req, sampling, opts: ModelOptions, inputs, gpu: int = 0, progress=None, logger: logging.Logger = log
) -> dict:
    """One generation on GPU `gpu` with the warm pipeline; returns generate()'s record (+ "offload", and
    "gpu_wait_s": the seconds spent waiting for the GPU slot, apart from the generation's own "seconds")."""
    import time

    from scailflow.scail.generate import generate

    asked = time.perf_counter()
    opts = opts.for_preset(sampling.preset)  # e.g. comfy's LoRA strengths when only the paths were given
    with gpu_slot(gpu):
        waited = time.perf_counter() - asked
        if waited >= 1:
            logger.info("waited %.1f s for GPU %d (another generation held it)", waited, gpu)
        try:
            record = generate(warm_pipeline(opts, logger), req, sampling, progress, inputs=inputs)
        except Exception as e:  # noqa: BLE001 - only a GPU out-of-memory is handled here
            if not (is_out_of_memory(e) and opts.oom_retry_offload and opts.offload == "none"):
                raise
            logger.warning("GPU out of memory; retrying once with block offload (oom_retry_offload is on)")
            release_pipelines()
            opts = opts.model_copy(update={"offload": "block"})
            record = generate(warm_pipeline(opts, logger), req, sampling, progress, inputs=inputs)
    record["offload"] = opts.offload
    record["gpu_wait_s"] = round(waited, 3)
    return record
