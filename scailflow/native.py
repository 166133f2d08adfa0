"""Heavy native libraries (mediapipe, onnxruntime, sam2, torch extensions) imported one at a time, once, safely.

The pose and masks stages run in parallel threads. Importing mediapipe from two threads at once can deadlock in
Python's import machinery (`_DeadlockError ... _ModuleLock('mediapipe...')`), which leaves modules half-initialised in
`sys.modules`: every later use in that process then fails (`NameError: name 'framework' is not defined`), so retries
cannot heal it. Here every such import goes through one process-wide lock, and an import that fails takes back every
module it added, so the next attempt starts clean. The flow also preloads what a job needs before its stage threads
start (`preload`).
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from types import ModuleType
from typing import Iterable

log = logging.getLogger("scailflow")
_LOCK = threading.RLock()


def import_native(name: str) -> ModuleType:
    """`importlib.import_module(name)` under the process-wide lock; on failure nothing it added is left behind."""
    with _LOCK:
        before = set(sys.modules)
        try:
            return importlib.import_module(name)
        except BaseException:
            for added in set(sys.modules) - before:
                sys.modules.pop(added, None)
            raise


def preload(names: Iterable[str]) -> list[str]:
    """Import these modules now, in this thread, where installed; returns the ones imported. A module that is not
    installed is left for its stage to report."""
    done = []
    for name in names:
        try:
            import_native(name)
            done.append(name)
        except ImportError as e:
            log.debug("not preloaded: %s (%s)", name, e)
    return done
