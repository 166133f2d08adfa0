"""Seconds since this process started, so a take's record can show where a command's time went outside its stages
(imports and CUDA start before the load, exit after the write)."""

from __future__ import annotations

import os


def process_seconds() -> float | None:
    """Seconds since the kernel started this process (Linux /proc, 10 ms resolution); None elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 2)
