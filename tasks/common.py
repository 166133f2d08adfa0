"""What every stage task shares: content-hash cache keys, manifests that make a cache hit true, retry policy.

A stage's base key = its stage version + its output folder + the sha256 of every file it reads + its parameters.
Prefect's cache answers from a key, but a stage's result is files on disk that a later run (other settings, another
folder sharing `--out`, a served pipeline) may have overwritten. So every stage also writes a manifest,
`<out>/.scailflow/<name>.json` = {base key, Prefect key, {file: sha256}}, atomically after its outputs, and the
key Prefect sees (`true_key`) is the manifest's only while the manifest holds: same base key and every file still
what it recorded. Anything else gets a new key, so the stage runs (a miss is never served from another run's files).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from prefect.tasks import exponential_backoff

from scailflow.errors import InputError, RetriedError, is_out_of_memory
from scailflow.files import file_sha256, output_error, write_text_atomic
from scailflow.layout import MANIFEST_DIR

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


def manifest_path(out_dir: str | os.PathLike, name: str) -> Path:
    return Path(out_dir) / MANIFEST_DIR / f"{name}.json"


def read_manifest(out_dir: str | os.PathLike, name: str) -> dict | None:
    try:
        doc = json.loads(manifest_path(out_dir, name).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("files"), dict) else None


def manifest_holds(doc: dict | None, base: str, out_dir: str | os.PathLike, check_hashes: bool = True) -> bool:
    """Whether `doc` was written for `base` and its files are still there (and, with check_hashes, unchanged)."""
    if not doc or doc.get("base") != base or not doc.get("key"):
        return False
    for name, digest in doc["files"].items():
        got = content_hash(Path(out_dir) / name)
        if got == "missing" or (check_hashes and got != digest):
            return False
    return True


def true_key(out_dir: str, name: str, base: str, rerun: bool = False, check_hashes: bool = True) -> str:
    """The cache key Prefect should look up: the manifest's key while the manifest holds for `base` (a hit is then
    exactly the files this key produced), else a new one (a miss: the stage runs and writes a new manifest).
    `rerun` forces the miss (`scailflow run --rerun STAGE`); the base key stays, so the next run hits again."""
    doc = read_manifest(out_dir, name)
    if not rerun and manifest_holds(doc, base, out_dir, check_hashes):
        return doc["key"]
    return f"{base}-{uuid.uuid4().hex[:12]}"


def write_manifest(out_dir: str | os.PathLike, name: str | None, files: Iterable[str | os.PathLike]) -> Path | None:
    """Record, atomically and after the outputs, which files this run's cache key produced, with their hashes.
    Called from inside a stage task: the key is the task's own (`true_key`'s `<base>-<nonce>`). `name` None: one
    manifest per base key (stages whose outputs are kept side by side, like takes)."""
    from prefect.transactions import get_transaction

    txn = get_transaction()
    key = txn.key if txn is not None else None
    if not key:  # no cache key (it could not be computed): nothing will be served from cache either
        return None
    out = Path(out_dir)
    doc = {
        "base": key.rsplit("-", 1)[0],
        "key": key,
        "files": {os.path.relpath(Path(f), out): content_hash(f) for f in files},
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return write_text_atomic(manifest_path(out, name or doc["base"]), json.dumps(doc, indent=2))


def heals(exc: BaseException | None) -> bool:
    """Whether a task-level retry can help. Never for bad input (InputError, undecodable text), an output place that
    cannot take the files (disk full, read-only, no permission), a GPU too small (OOM has its own one
    retry with offload) or a remote call's failure after its own client's retries (RetriedError, e.g. Gemini's: one
    level of retries per remote call)."""
    if exc is None or isinstance(exc, (InputError, UnicodeError, RetriedError)) or is_out_of_memory(exc):
        return False
    return not (isinstance(exc, OSError) and output_error(exc, "") is not None)  # disk full, read-only, no permission


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
