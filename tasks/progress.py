"""A folder's progress while its stages run: terminal bars, and one Prefect progress artifact per folder (key
`scailflow-<folder>-progress`) moved at every denoising step (frame loops at most once a second).

The stage libraries only call `scailflow.progress.report`; `stage(name, out_dir)` installs the reporter around a
task's library call. Weights of the overall percentage: pose, masks and prompt 5% each, generation 85%.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Iterator

from scailflow import console
from scailflow.progress import TERMINAL, Loop, ProgressFn, bar_name, reporting, terminal

log = logging.getLogger("scailflow.flow")

WEIGHTS = {"pose": 5.0, "masks": 5.0, "prompt": 5.0, "generate": 85.0}
SEND_EVERY_S = 1.0
_FOLDERS: dict[str, FolderProgress] = {}
_REGISTRY_LOCK = threading.Lock()


def artifact_key(folder: str) -> str:
    """Prefect artifact keys allow lowercase ASCII letters, digits and dashes only. Any other folder name (`café`,
    `名前`, dots, spaces) gets an ASCII slug plus a short hash of the real name, so two names never share a key."""
    name = Path(folder).name
    stem = "".join(c if c.isascii() and c.isalnum() else "-" for c in name.lower())
    stem = "-".join(part for part in stem.split("-") if part)
    if stem != name.lower() or not stem or len(stem) > 50:
        stem = f"{stem[:40] or 'folder'}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}".lstrip("-")
    return f"scailflow-{stem}"[:60]


class FolderProgress:
    """The numbers behind one folder's progress artifact (thread-safe: stages report from their own threads)."""

    def __init__(self, name: str):
        self.name = name
        self.key = f"{artifact_key(name)}-progress"
        self.fraction = dict.fromkeys(WEIGHTS, 0.0)
        self.text = dict.fromkeys(WEIGHTS, "waiting")
        self.loops: dict[tuple[str, str], Loop] = {}
        self.percent = 0.0
        self.segments = ""  # a multi-segment generation: "segment 3 of 4 (2 done)"
        self.picture = ""  # markdown: the video so far (an animated WebP) during a multi-segment generation
        self.artifact_id = None
        self._sent = 0.0
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------------------- state
    def description(self) -> str:
        stages = " · ".join(f"{s} {self.text[s]}" for s in WEIGHTS)
        text = f"**{self.name}** {self.percent:.0f}% · {stages}"
        if self.segments and self.text["generate"] != "done":
            text += f"\n\ngeneration: {self.segments}"
        return text + (f"\n\n{self.picture}" if self.picture and self.text["generate"] != "done" else "")

    def update(self, stage: str, what: str, done: int, total: int) -> None:
        with self._lock:
            key = (stage, bar_name(what))
            loop = self.loops.get(key)
            if loop is None or done < loop.done:
                loop = self.loops[key] = Loop(stage, what, done, total)
            else:
                loop.update(what, done, total)
            if stage == "generate" and key[1] == "segment":  # its own line, beside the step counts
                self.segments = f"segment {min(done + 1, total)} of {total} ({done} done)" if done < total else ""
                self._send(force=True)
                return
            if stage == "generate":
                if key[1] == "denoise":
                    self.fraction[stage] = 0.95 * done / max(1, total)
            else:
                self.fraction[stage] = max(self.fraction[stage], 0.9 * done / max(1, total))
            self.text[stage] = loop.line()
            self._send(force=key[1] == "denoise" or done >= total)

    def preview(self, markdown: str) -> None:
        """Show the video so far (a markdown picture) until generation ends."""
        with self._lock:
            self.picture = markdown
            self._send(force=True)

    def started(self, stage: str) -> None:
        with self._lock:
            if stage == "generate":  # generation starts once the other three are done (or cached)
                for s in ("pose", "masks", "prompt"):
                    self.fraction[s], self.text[s] = 1.0, "done"
            self.text[stage] = "running"
            self._send(force=True)

    def finished(self, stage: str) -> None:
        with self._lock:
            self.fraction[stage], self.text[stage] = 1.0, "done"
            self._send(force=True)

    def failed(self, stage: str, error: BaseException) -> None:
        with self._lock:
            first = str(error).splitlines()[0] if str(error) else error.__class__.__name__
            self.text[stage] = f"FAILED: {first[:200]}"
            self._send(force=True)

    def complete(self, text: str) -> None:
        with self._lock:
            for s in WEIGHTS:
                self.fraction[s], self.text[s] = 1.0, "done"
            self._send(force=True, extra=text)

    # ---------------------------------------------------------------------------------------- Prefect
    def create(self) -> None:
        from prefect.artifacts import create_progress_artifact

        try:
            self.artifact_id = create_progress_artifact(0.0, key=self.key, description=self.description())
        except Exception as e:  # noqa: BLE001 - progress must never fail a run
            log.debug("no progress artifact: %s", e)

    def _send(self, force: bool, extra: str = "") -> None:
        self.percent = max(self.percent, sum(WEIGHTS[s] * self.fraction[s] for s in WEIGHTS))
        now = time.monotonic()
        if self.artifact_id is None or not (force or now - self._sent >= SEND_EVERY_S):
            return
        self._sent = now
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactUpdate

        desc = self.description() + (f"\n\n{extra}" if extra else "")
        try:
            with get_client(sync_client=True) as client:
                client.update_artifact(self.artifact_id, ArtifactUpdate(data=round(self.percent, 2), description=desc))
        except Exception as e:  # noqa: BLE001 - the API is away: stop asking (each try could wait on retries)
            log.debug("progress artifact no longer updated: %s", e)
            self.artifact_id = None


def folder_progress(out_dir: str | Path, name: str | None = None, create: bool = True) -> FolderProgress:
    """The folder's progress (a new artifact when `name` is given: a new run of it), else the one this process has."""
    key = str(Path(out_dir).resolve())
    with _REGISTRY_LOCK:
        progress = _FOLDERS.get(key)
        if progress is None or name is not None:
            progress = _FOLDERS[key] = FolderProgress(name or console.folder_of(out_dir) or "folder")
            if create:
                progress.create()
        return progress


@contextlib.contextmanager
def stage(name: str, out_dir: str) -> Iterator[ProgressFn]:
    """Around a stage task's library call: its `report` calls draw bars and move the folder's artifact."""
    folder = folder_progress(out_dir)
    bars = terminal(console.label(name))

    def fn(what: str, done: int, total: int) -> None:
        bars(what, done, total)
        folder.update(name, what, done, total)

    folder.started(name)
    try:
        with reporting(fn):
            yield fn
    except BaseException as e:
        folder.failed(name, e)
        raise
    else:
        folder.finished(name)
    finally:
        TERMINAL.close(console.label(name))
