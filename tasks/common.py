"""What every stage task shares: content-hash cache keys, retry policy, logging into Prefect.

A stage's cache key = its stage version + its output folder + the sha256 of every file it reads + its
parameters. So an unchanged
folder is served from cache and a changed (or hand-edited) input re-runs exactly the stages that read it. A stage
whose outputs were deleted is run with `refresh_cache` (see `fresh`), so they are made again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from prefect.tasks import exponential_backoff

from scailflow.errors import InputError
from scailflow.files import file_sha256, output_error

_HASHES: dict[tuple[str, int, int], str] = {}


def content_hash(path: str | os.PathLike | None) -> str:
    """sha256 of a file (memoised on path, size and mtime within one process); '-' for None, 'missing' if absent."""
    if path is None:
        return "-"
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return "missing"
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = file_sha256(p)
    return _HASHES[key]


def weights_fingerprint(path: str | os.PathLike | None) -> str:
    """Large model files are identified by name, size and mtime (hashing 30+ GB per run would cost minutes)."""
    if not path:
        return "-"
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return f"{p}:missing"
    return f"{p.name}:{st.st_size}:{st.st_mtime_ns}"


def stage_key(
    stage: str,
    version: str,
    out_dir: str,
    reads: Iterable[str | None],
    params: dict[str, Any],
    weights: Iterable[str | None] = (),
) -> str:
    """The cache key of one stage run. `out_dir` is part of it: a result is files in that folder, so the same
    inputs in another folder are another result."""
    doc = {
        "stage": stage,
        "version": version,
        "out_dir": str(Path(out_dir).resolve()),
        "reads": [content_hash(p) for p in reads],
        "weights": [weights_fingerprint(w) for w in weights],
        "params": jsonable(params),
    }
    return f"{stage}-" + hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:32]


def jsonable(value: Any) -> Any:
    """Option models (pydantic) as plain data, for keys."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def fresh(task, outputs: Iterable[str | os.PathLike]):
    """The task as is when its outputs are on disk; with `refresh_cache=True` (run, re-cache) when one is missing."""
    missing = not all(Path(o).is_file() for o in outputs)
    return task.with_options(refresh_cache=True) if missing else task


def heals(exc: BaseException | None) -> bool:
    """Whether a task-level retry can help. Never for bad input (InputError, undecodable text), an output place that
    cannot take the files (disk full, read-only, no permission), a GPU too small (OOM has its own one
    retry with offload) or a Gemini failure (the Gemini client already retried with backoff: one level of retries
    per remote call)."""
    if exc is None or isinstance(exc, (InputError, UnicodeError)) or exc.__class__.__name__ == "OutOfMemoryError":
        return False
    if isinstance(exc, OSError) and output_error(exc, "") is not None:  # disk full, read-only, no permission
        return False
    from scailflow.prompts import GeminiError

    return not isinstance(exc, GeminiError)


def retry_condition(task, task_run, state) -> bool:
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as e:  # noqa: BLE001 - reading the failure itself failed
        exc = e
    return heals(exc if isinstance(exc, BaseException) else None)


def stage_task_options(retries: int = 2, backoff: float = 2.0) -> dict[str, Any]:
    """Retries with exponential backoff and jitter, only for errors that can heal; results persisted for caching."""
    return dict(
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=backoff),
        retry_jitter_factor=0.5,
        retry_condition_fn=retry_condition,
        persist_result=True,
    )


def cache_key(builder: Callable[[dict], str]) -> Callable:
    """Adapt `builder(parameters) -> key` to Prefect's cache_key_fn(context, parameters)."""

    def fn(context, parameters):
        return builder(parameters)

    return fn


def stage_logger(name: str) -> logging.Logger:
    """The run logger inside a Prefect run (visible in the UI), the stage library's logger otherwise."""
    try:
        from prefect import get_run_logger

        return get_run_logger()  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - outside a run context
        return logging.getLogger(f"scailflow.{name}")
