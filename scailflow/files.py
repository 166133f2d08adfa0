"""Atomic file writes, their modes, write faults as one line, and content hashes.

Outputs follow the user's umask (0644 under 022) although scailflow's own state is private (the CLI runs with
umask 077, see `private_umask`). A full disk, a read-only folder or a missing permission becomes one `OutputError`
naming the path. Temporary files in flight are known (`pending`), so a stopped run can remove them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from scailflow.errors import InputError, OutputError

_USER_UMASK: list[int] = []  # the umask the user started scailflow with, once the CLI made the process private
_PENDING: set[Path] = set()
_PENDING_LOCK = threading.Lock()

_FAULTS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def _process_umask() -> int:
    """The current umask, read without changing it (os.umask would race with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def user_umask() -> int:
    """The umask outputs follow: the user's, even while the process itself runs with a private one."""
    return _USER_UMASK[0] if _USER_UMASK else _process_umask()


def private_umask() -> int:
    """Make files this process creates from now on private (umask 077: Prefect's results, caches), while outputs
    keep following the user's umask. Call once, early, before threads start; returns the user's umask."""
    old = os.umask(0o077)
    if not _USER_UMASK:
        _USER_UMASK.append(old)
    return _USER_UMASK[0]


def restore_umask() -> None:
    """Undo `private_umask` (for in-process callers such as tests)."""
    if _USER_UMASK:
        os.umask(_USER_UMASK.pop())


def output_error(exc: OSError, path: str | os.PathLike) -> OutputError | None:
    """A write fault the operator must fix (disk full, read-only, permission) as one line naming `path`."""
    reason = _FAULTS.get(getattr(exc, "errno", None) or -1)
    if reason is None:
        return None
    return OutputError(f"cannot write {path}: {reason}")


def make_dirs(path: str | os.PathLike) -> Path:
    """mkdir -p with the user's umask (0755 under 022), whatever the process umask; write faults as OutputError."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
        for d in reversed(missing):
            os.chmod(d, 0o777 & ~user_umask())
    except OSError as e:
        fault = output_error(e, path)
        if fault is None:
            raise
        raise fault from None
    return path


def pending() -> list[Path]:
    """Temporary files being written right now (a stopping run removes them)."""
    with _PENDING_LOCK:
        return list(_PENDING)


def remove_pending() -> int:
    n = 0
    for p in pending():
        with contextlib.suppress(OSError):
            p.unlink()
            n += 1
    return n


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, private: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds.

    The temp name keeps the suffix so writers that pick a format from it (PyAV, OpenCV, PIL) still work.
    A reader never sees a half-written file under the final name. The file gets the user's umask (0644 under
    022), or 0600 when `private`. A full disk, a read-only folder or a missing permission raises OutputError.
    """
    final = Path(final)
    make_dirs(final.parent)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".partial{final.suffix}", dir=final.parent)
    except OSError as e:
        fault = output_error(e, final)
        if fault is None:
            raise
        raise fault from None
    os.close(fd)
    tmp = Path(name)
    with _PENDING_LOCK:
        _PENDING.add(tmp)
    try:
        try:
            yield tmp
            os.chmod(tmp, 0o600 if private else 0o666 & ~user_umask())
            os.replace(tmp, final)
        except OSError as e:
            fault = output_error(e, final) if _about(e, tmp, final) else None
            if fault is None:
                raise
            raise fault from None
    finally:
        with _PENDING_LOCK:
            _PENDING.discard(tmp)
        with contextlib.suppress(OSError):
            tmp.unlink()


def _about(exc: OSError, *paths: Path) -> bool:
    """Whether an OSError concerns the file being written (a writer's error without a file name counts): a
    permission error reading some input is that input's problem, not the output's."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) or not getattr(exc, "filename", None):
        return True
    return any(os.fspath(exc.filename) in (str(p), str(p.parent)) for p in paths)


def write_bytes_atomic(final: str | os.PathLike, data: bytes, private: bool = False) -> Path:
    with atomic_path(final, private) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_text_atomic(final: str | os.PathLike, text: str, private: bool = False) -> Path:
    return write_bytes_atomic(final, text.encode("utf-8"), private)


def read_text(path: str | os.PathLike, what: str = "text file", max_bytes: int | None = None) -> str:
    """A user's text file as UTF-8; an unreadable, undecodable or oversized file is one InputError naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1 if max_bytes is not None else -1)
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise InputError(f"{path}: {what} larger than {max_bytes // 1024} KiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{path}: {what} is not UTF-8 text (byte {e.start}: {data[e.start : e.start + 1]!r})"
        ) from None


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
