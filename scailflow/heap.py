"""Handing memory the process has freed back to the system (glibc's `malloc_trim`), for loops that walk a long clip.

Why: glibc raises its mmap threshold once a large block (a decoded 1080p frame, 6 MB) is freed, so later frames and
the work buffers around them are carved from the heap instead of mapped; freed there, among blocks still in use, their
pages stay resident. In the pose-driven stage on 1080p footage this made resident memory grow by ~4 MB a frame while
what Python held stayed flat (tracemalloc: ~30 MB): after the 2D pose of 30 / 60 / 120 frames, 894 / 959 / 1168 MiB
resident, 715-781 MiB after `malloc_trim`. Pinning the threshold (MALLOC_MMAP_THRESHOLD_=4194304) removed the growth
too, at 8x the page faults and 4x the system time of a whole run. `malloc_trim(0)` returns the free pages of every
arena, wherever they lie, and frees nothing in use, so it changes no result. Elsewhere than glibc it is a no-op.
"""

from __future__ import annotations

import ctypes
import sys

# frames between two trims in a streamed walk: a trim costs ~25 ms when it has hundreds of MB to give back, microseconds
# otherwise; a 1080p frame's pose or render costs far more
TRIM_EVERY = 16


def _load_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _load_trim()


def release_freed_memory() -> None:
    """Give the pages of freed heap memory back to the system (glibc); no-op where that is not available."""
    if _TRIM is not None:
        _TRIM(0)
