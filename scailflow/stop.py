"""Stopping on SIGTERM and SIGINT: within seconds, one line, no partial file, no orphaned process.

`timeout`, systemd and Kubernetes send SIGTERM; Ctrl-C sends SIGINT. Either one sets `STOPPING`, then a stopper
thread runs the registered stop callbacks (report the run as cancelled, stop our temporary Prefect API, stop a child
server), removes the temporary files being written (files.py knows them), prints one line and ends the process with
128 + the signal number (143, 130). It does not wait for a generation to finish: outputs are only ever renamed into
place when complete, and finished stages are cached, so the next run resumes. A second signal ends it at once.

No Prefect in here: the flows register their callbacks (flows/stopping.py).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable

from scailflow.files import remove_pending

SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_BUDGET_S = 8.0  # the callbacks together; then the process ends regardless
STOPPING = threading.Event()

_CALLBACKS: list[Callable[[], None]] = []
_PREVIOUS: dict[int, object] = {}
_NOTE = ["re-run to resume"]
_STOPPER: list[threading.Thread] = []


def on_stop(callback: Callable[[], None]) -> Callable[[], None]:
    """Run `callback` when a stop signal arrives (newest first; each one bounded by the stop budget)."""
    _CALLBACKS.append(callback)
    return callback


def remove_on_stop(callback: Callable[[], None]) -> None:
    if callback in _CALLBACKS:
        _CALLBACKS.remove(callback)


def set_note(text: str) -> None:
    """What the stop line tells the user after 'stopped by SIGTERM' (e.g. that finished stages are cached)."""
    _NOTE[0] = text


def install() -> bool:
    """Handle SIGTERM and SIGINT in this process (main thread only); returns whether it did."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in SIGNALS:
        previous = signal.signal(sig, _handler)
        _PREVIOUS.setdefault(sig, previous)
    return True


def reinstall() -> None:
    """Take the signals back after a library replaced our handler (Prefect's flow engine installs its own SIGTERM
    bridge for the duration of a flow run, which waits for running tasks); only where `install` ran."""
    if _PREVIOUS and threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _handler)


def uninstall() -> None:
    """Give the signals back to whoever had them before `install` (for in-process callers such as tests)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, previous in _PREVIOUS.items():
        signal.signal(sig, previous)  # type: ignore[arg-type]
    _PREVIOUS.clear()
    _CALLBACKS.clear()


def _handler(signum: int, frame) -> None:
    if STOPPING.is_set():  # a second signal: now
        os._exit(128 + signum)
    STOPPING.set()
    stopper = threading.Thread(target=_stop, args=(signum,), name="scailflow-stop", daemon=True)
    _STOPPER.append(stopper)
    stopper.start()


def finish() -> None:
    """If a stop is under way, let it end the process: its line and exit code are the ones that count, not whatever
    the interrupted command returns or raises meanwhile."""
    if STOPPING.is_set() and _STOPPER:
        _STOPPER[0].join(STOP_BUDGET_S + 5)


def _stop(signum: int) -> None:
    deadline = time.monotonic() + STOP_BUDGET_S
    for callback in reversed(list(_CALLBACKS)):
        worker = threading.Thread(target=_quietly, args=(callback,), daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
    removed = remove_pending()
    name = signal.Signals(signum).name
    partial = f"{removed} partial file(s) removed" if removed else "no partial file left"
    line = f"error: stopped by {name}: {partial}; {_NOTE[0]}\n"
    flush = threading.Thread(target=_quietly, args=(sys.stdout.flush,), daemon=True)
    flush.start()
    flush.join(0.5)  # another thread may hold stdout; the line below goes out regardless
    try:  # sys.stderr is the terminal even where fd 2 is rerouted (scailflow/console.py filters native noise)
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        fd = 2
    os.write(fd, line.encode())
    os._exit(128 + signum)


def _quietly(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:  # noqa: BLE001 - stopping goes on whatever one callback does
        pass
