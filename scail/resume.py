"""Kept segments of a long generation, so a run that dies (crash, SIGKILL, SIGTERM, out of memory) resumes at the
first unfinished segment and ends with the same video, bit for bit, as a run that never stopped.

A `SegmentStore` is a folder (the folder flow keeps it at `<out>/.scailflow/segments/<take>/`) holding:

- `plan.json`: what the kept segments were made from (the caller's key, e.g. the take's hash, plus the seed, the
  segment plan and the size). Anything else found there is stale and removed before the run starts again.
- `segment-0001.safetensors` ...: one per finished segment, written atomically: its output frames (RGB uint8
  [n, H, W, 3], the frames it adds to the video) and what the next segment needs: the last decoded frames it hands
  over as history (the float tensor itself, not a re-encoded picture), the noise generator's state after it, and the
  colour matcher's reference statistics; the colour record goes in the file's metadata.
- `progress.json`: which segment runs, since when, and how long each finished one took (`scailflow status` reads it).

The finished segments' frames live on disk, not in memory; the video is written from them at the end. Without a
store (`MemorySegments`) the frames stay in memory, as before. No Prefect here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from scailflow.files import atomic_path, write_text_atomic
from scailflow.scail.segment_status import PROGRESS, read_progress, status_line  # noqa: F401 - status_line re-exported

PLAN = "plan.json"


@dataclass
class Carry:
    """What segment k+1 needs from segments 1..k."""

    rng: torch.Tensor  # the noise generator's state after segment k
    history: torch.Tensor | None = None  # [3, n, H, W]: segment k's last decoded frames, handed over as history
    matcher: dict[str, np.ndarray] = field(default_factory=dict)  # the colour matcher's reference statistics
    color_record: list[dict] = field(default_factory=list)


class MemorySegments:
    """Segments kept in memory only (no folder given): nothing to resume."""

    def __init__(self) -> None:
        self._frames: list[np.ndarray] = []

    def start(self, fingerprint: dict, total: int) -> int:
        self._frames.clear()
        return 0

    def restore(self, done: int) -> Carry:  # pragma: no cover - start() never reports kept segments
        raise RuntimeError("nothing kept in memory to resume from")

    def begin(self, k: int) -> None:
        pass

    def keep(self, k: int, frames: np.ndarray, carry: Carry) -> None:
        self._frames.append(frames)

    def frames(self) -> np.ndarray:
        return np.concatenate(self._frames) if len(self._frames) > 1 else self._frames[0]


class KeptFrames:
    """The kept segments' frames as one sequence (len, iteration), read from disk a segment at a time."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.counts = [_frame_count(p) for p in paths]

    def __len__(self) -> int:
        return sum(self.counts)

    def __iter__(self) -> Iterator[np.ndarray]:
        for p in self.paths:
            yield from _load(p)["frames"].numpy()

    def sample(self, n: int) -> np.ndarray:
        """About `n` frames spread evenly over the whole (for a preview); at most one segment is read at a time."""
        total = len(self)
        wanted = set(np.linspace(0, total - 1, min(n, total)).round().astype(int).tolist()) if total else set()
        out, offset = [], 0
        for p, count in zip(self.paths, self.counts):
            idx = [i - offset for i in sorted(wanted) if offset <= i < offset + count]
            if idx:
                out.append(_load(p)["frames"][idx].numpy())
            offset += count
        return np.concatenate(out) if out else np.zeros((0, 1, 1, 3), np.uint8)


class SegmentStore:
    """Finished segments kept in a folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, key: str = ""):
        self.root = Path(root)
        self.key = key
        self.total = 0
        self._seconds: list[float] = []
        self._began = 0.0

    # ------------------------------------------------------------------------------------------ files
    def segment_path(self, k: int) -> Path:
        return self.root / f"segment-{k + 1:04d}.safetensors"

    def kept(self) -> int:
        """How many segments, from the first, are kept (a gap ends the count)."""
        n = 0
        while self.segment_path(n).is_file():
            n += 1
        return n

    def read_plan(self) -> dict:
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads((self.root / PLAN).read_text())
            if isinstance(doc, dict):
                return doc
        return {}

    def clear(self) -> None:
        """Remove the folder (the take is finished, or what it holds is stale), and the segments folder above it
        once it is empty: a finished output folder holds nothing of the resume machinery."""
        shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.root.parent.rmdir()

    # ------------------------------------------------------------------------------------------ the loop
    def start(self, fingerprint: dict, total: int) -> int:
        """Open for a generation made from `fingerprint` in `total` segments; returns how many are kept already.
        Kept segments of anything else are removed first."""
        self.total = total
        doc = {"key": self.key, **json.loads(json.dumps(fingerprint, default=str))}
        old = self.read_plan()
        if {k: v for k, v in old.items() if k != "created"} != doc:
            self.clear()
            old = {}
        self.root.mkdir(parents=True, exist_ok=True)
        if not old:
            write_text_atomic(self.root / PLAN, json.dumps(doc | {"created": _now()}, indent=2), private=True)
        prior = self.read_progress().get("seconds", [])
        done = min(self.kept(), total)
        self._seconds = [float(s) for s in prior[:done]] if len(prior) >= done else []
        return done

    def restore(self, done: int) -> Carry:
        """What segment `done` + 1 needs, from segment `done`'s file."""
        data = _load(self.segment_path(done - 1), skip="frames")
        meta = _metadata(self.segment_path(done - 1))
        # the colour matcher's statistics are the first segment's
        matcher = {k.removeprefix("matcher."): v.numpy() for k, v in _load(self.segment_path(0), "matcher.").items()}
        return Carry(
            rng=data["rng"],
            history=data.get("history"),
            matcher=matcher,
            color_record=json.loads(meta.get("color_record", "[]")),
        )

    def begin(self, k: int) -> None:
        """Segment k (0-based) starts."""
        self._began = time.time()
        self._write_progress(k, running=True)

    def keep(self, k: int, frames: np.ndarray, carry: Carry) -> None:
        """Segment k finished: its output frames and the carry for the next one, atomically."""
        from safetensors.torch import save_file

        tensors = {"frames": torch.from_numpy(np.ascontiguousarray(frames)), "rng": carry.rng.contiguous()}
        if carry.history is not None:
            tensors["history"] = carry.history.contiguous()
        for name, value in carry.matcher.items():
            tensors[f"matcher.{name}"] = torch.from_numpy(np.ascontiguousarray(value))
        meta = {"color_record": json.dumps(carry.color_record), "key": self.key}
        with atomic_path(self.segment_path(k), private=True) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        self._seconds.append(round(time.time() - self._began, 3))
        self._write_progress(k + 1, running=False)

    def frames(self) -> KeptFrames:
        return KeptFrames([self.segment_path(k) for k in range(self.kept())])

    # ------------------------------------------------------------------------------------------ progress
    def read_progress(self) -> dict:
        return read_progress(self.root)

    def _write_progress(self, k: int, running: bool) -> None:
        doc = {
            "key": self.key,
            "pid": os.getpid(),
            "total": self.total,
            "done": k,
            "running": k + 1 if running else None,  # 1-based: the segment under way
            "segment_started": self._began if running else None,
            "seconds": self._seconds,
            "updated": time.time(),
        }
        write_text_atomic(self.root / PROGRESS, json.dumps(doc), private=True)


def _load(path: Path, prefix: str = "", skip: str | None = None) -> dict[str, torch.Tensor]:
    """A kept segment's tensors (those whose names start with `prefix`, but `skip`)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefix) and k != skip}


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def _frame_count(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return int(f.get_slice("frames").get_shape()[0])


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
