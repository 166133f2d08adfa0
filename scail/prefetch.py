"""Weights read from disk while the process does other things.

A command spends its first seconds importing torch and checking its inputs, and the load then reads ~43 GB of
weights mostly through page faults of memory-mapped files (one 4-128 KiB read at a time). `start(paths)` reads the
files in load order in a background thread, in large sequential reads (what `dd` does), so the disk runs at its own
speed from the first second and the load finds the bytes in the page cache. It reads only what fits: files are taken
in order while their sum stays within half of the memory the system says is available, so it never evicts a file it
read before the load uses it. Torch-free."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger("scailflow.scail")

CHUNK = 16 * 2**20  # bytes per read
SHARE_OF_AVAILABLE = 0.5  # of MemAvailable: the most this reads ahead


def available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux); None elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def files_that_fit(paths: list[Path], budget: int | None) -> list[Path]:
    """The leading files of `paths` whose sizes sum within `budget` bytes (all of them when the budget is unknown)."""
    if budget is None:
        return list(paths)
    taken, total = [], 0
    for p in paths:
        total += p.stat().st_size
        if total > budget:
            break
        taken.append(p)
    return taken


class Prefetch:
    """A background thread reading files into the page cache; `bytes_read`, `seconds`, `done` for the log."""

    def __init__(self, paths: list[Path]):
        self.paths = list(paths)
        self.bytes_read = 0
        self.seconds = 0.0
        self.done = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._read_all, name="scailflow-prefetch", daemon=True)
        self._thread.start()

    def _read_all(self) -> None:
        t0 = self._t0
        buf = bytearray(CHUNK)
        try:
            for path in self.paths:
                with open(path, "rb", buffering=0) as f:
                    if hasattr(os, "posix_fadvise"):
                        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
                    while n := f.readinto(buf):
                        self.bytes_read += n
        except OSError as e:  # the load reads the files itself and reports what is wrong with them
            log.debug("prefetch stopped at %s: %s", path, e)
        finally:
            self.seconds = time.perf_counter() - t0
            self.done.set()

    def elapsed(self) -> float:
        return self.seconds if self.done.is_set() else time.perf_counter() - self._t0

    def summary(self) -> str:
        gb, seconds = self.bytes_read / 1e9, self.elapsed()
        rate = gb / seconds if seconds else 0.0
        state = "" if self.done.is_set() else " so far"
        return f"{gb:.2f} GB read ahead{state} in {seconds:.1f} s ({rate:.2f} GB/s)"

    def record(self) -> dict:
        return {"bytes": self.bytes_read, "seconds": round(self.elapsed(), 2), "done": self.done.is_set()}


_running: dict[tuple[str, ...], Prefetch] = {}


def start(paths: list[Path]) -> Prefetch | None:
    """Start reading `paths` (in order, as many as fit) unless this process already does; None when none fit or
    SCAILFLOW_PREFETCH=0."""
    if os.environ.get("SCAILFLOW_PREFETCH", "1") == "0":
        return None
    avail = available_bytes()
    fit = files_that_fit([Path(p) for p in paths], None if avail is None else int(avail * SHARE_OF_AVAILABLE))
    if not fit:
        return None
    key = tuple(str(p) for p in fit)
    if key not in _running:
        if len(fit) < len(paths):
            log.info(
                "reading ahead %d of %d weight files (the rest do not fit half the available memory)",
                len(fit),
                len(paths),
            )
        _running[key] = Prefetch(fit)
    return _running[key]
