"""The one error type users see as a single line (bad input, missing weights, impossible settings), and what
counts as out-of-memory or as already retried, defined once."""

from __future__ import annotations

import sys


class InputError(ValueError):
    """Input the user must fix; retrying cannot heal it. The CLI prints it as one line and exits non-zero."""


class OutputError(InputError):
    """The output place cannot take the files (disk full, read-only, no permission): the operator must fix it;
    retrying cannot heal it. One line naming the path, exit 2, like bad input."""


class RetriedError(RuntimeError):
    """A remote call that already retried with backoff and failed for good (e.g. the Gemini client's GeminiError):
    a task-level retry would add a second level of retries, so the retry policy leaves it alone."""


def is_out_of_memory(exc: BaseException | None) -> bool:
    """Whether `exc` is the accelerator running out of memory (torch's OutOfMemoryError, CUDA's among them): the one
    definition the CLI (its exit 3 line), the retry policy (no blind retry) and generation (one retry with block
    offload) use. Without torch loaded no such error can exist, so torch is never imported here."""
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return oom is not None and isinstance(exc, oom)
