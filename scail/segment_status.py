"""What a long generation's kept segments say about the run: the progress file (`progress.json`, written by
`scailflow.scail.resume.SegmentStore`) and the one line `scailflow status` prints from it.

Torch-free on purpose (json and the standard library only): `scailflow status` reads it and answers in a fraction of
a second, without the ~1.5 s that importing torch (through the resume module) cost each call.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

PROGRESS = "progress.json"


def read_progress(root: str | os.PathLike) -> dict:
    """The progress file of the kept segments in `root`, or {} when there is none (or it does not read)."""
    with contextlib.suppress(OSError, ValueError):
        doc = json.loads((Path(root) / PROGRESS).read_text())
        if isinstance(doc, dict):
            return doc
    return {}


def status_line(root: str | os.PathLike, now: float | None = None) -> str | None:
    """One line about the kept segments in `root`: "segment 3 of 4 running, 2/4 done, ETA 0:12" (a live run) or
    "interrupted after 2/4 segments: a re-run resumes at segment 3"; None when nothing is kept there."""
    from scailflow.progress import clock

    doc = read_progress(root)
    total = int(doc.get("total") or 0)
    if not total:
        return None
    done, seconds = int(doc.get("done") or 0), [float(s) for s in doc.get("seconds") or []]
    alive = _alive(doc.get("pid")) and doc.get("running") is not None
    if not alive:
        return f"interrupted after {done}/{total} segments: a re-run resumes at segment {done + 1} of {total}"
    now = time.time() if now is None else now
    eta = "--:--"
    if seconds:
        per = sum(seconds) / len(seconds)
        in_current = max(0.0, now - float(doc.get("segment_started") or now))
        eta = clock(max(0.0, per * (total - done) - min(in_current, per)))
    return f"segment {doc['running']} of {total} running, {done}/{total} segments done, ETA {eta}"


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
