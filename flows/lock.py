"""One run per output folder at a time: an advisory file lock (the second run waits, or skips).

While holding the lock a run also removes temporary files a killed run left behind (`.NAME.*.partial.EXT`);
no half-written file ever sits under a final name, because every output is written to such a temp and renamed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Iterator

from scailflow.errors import InputError
from scailflow.files import make_dirs, output_error, user_umask

log = logging.getLogger("scailflow.flow")
LOCK_NAME = ".scailflow.lock"


class FolderBusy(InputError):
    """Another run holds this output folder (raised only when asked not to wait)."""


@contextlib.contextmanager
def folder_lock(out_dir: Path, wait: bool = True, timeout_s: float | None = None) -> Iterator[Path]:
    make_dirs(out_dir)
    path = out_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, 0o666 & ~user_umask())  # like any output: the user's umask, not the process's private one
    except OSError as e:
        fault = output_error(e, out_dir)
        if fault is None:
            raise
        raise fault from None
    try:
        start = time.monotonic()
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    raise FolderBusy(f"{out_dir} is being processed by another run (pid in {path})") from None
                if timeout_s is not None and time.monotonic() - start > timeout_s:
                    raise FolderBusy(f"{out_dir}: still busy after {timeout_s:.0f} s") from None
                if not announced:
                    log.info("%s is busy (another run); waiting for it", out_dir)
                    announced = True
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        removed = remove_partials(out_dir)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted run", removed)
        yield path
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def remove_partials(out_dir: Path) -> int:
    n = 0
    for p in out_dir.rglob(".*.partial*"):
        with contextlib.suppress(OSError):
            p.unlink()
            n += 1
    return n
