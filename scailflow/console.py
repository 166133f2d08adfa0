"""What the terminal shows: one line per event, naming its stage (and in a batch its folder), one final summary.

Hidden unless `--debug`: the TF-Lite / absl lines mediapipe's C++ writes straight to file descriptor 2, Prefect's
engine chatter (`Finished in state Completed()`, the temporary server's banner, `NotReady(...)`, retries worded for
developers) and tracebacks on the console (the Prefect UI's log keeps the full records: only the console's copy is
shortened). Prefect is never imported here; its records are recognised by their attributes and words.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
from pathlib import Path

from scailflow.progress import TERMINAL

STAGE_OF_LOGGER = {
    "scailflow.pose": "pose",
    "scailflow.masks": "masks",
    "scailflow.prompts": "prompt",
    "scailflow.scail": "generate",
    "scailflow.flow": "run",
    "scailflow.flows": "run",
    "scailflow.progress": "progress",
    "prefect": "prefect",
}
STAGE_STYLE = {"pose": "magenta", "masks": "blue", "prompt": "yellow", "generate": "green"}
DEFAULT_OUT = "scailflow"  # flows/folder.py's default output folder name: FOLDER/scailflow

_FOLDERS: dict[str, str] = {}  # resolved output folder -> the raw folder's name (flows register theirs)
_SETTINGS = {"show_folder": False, "debug": False, "own_summary": True}


# ------------------------------------------------------------------------------------------------ names
def name_folder(out_dir: str | os.PathLike, name: str) -> None:
    """Remember which raw folder an output folder belongs to (tasks only see output folders)."""
    _FOLDERS[str(Path(out_dir).resolve())] = name


def name_task_runs(ids, name: str) -> None:
    """Remember the folder of task runs (Prefect's lines about a run that never started carry only its id)."""
    for i in ids:
        _FOLDERS[str(i)] = name


def folder_of(out_dir: str | os.PathLike | None) -> str | None:
    if not out_dir:
        return None
    p = Path(out_dir)
    known = _FOLDERS.get(str(p.resolve()))
    return known or (p.parent.name if p.name == DEFAULT_OUT else p.name)


RUN_NAME_SEP = " · "


def task_run_name(stage: str, folder: str) -> str:
    """A stage's task run name in a folder: `masks · clip` (the UI lists it; the console reads the folder back).
    Braces are doubled: Prefect formats the name with the task's parameters."""
    return f"{stage}{RUN_NAME_SEP}{folder}".replace("{", "{{").replace("}", "}}")


def run_context() -> tuple[str | None, str | None]:
    """(stage, folder) of the Prefect run this thread is in, when Prefect is loaded."""
    if "prefect.context" not in sys.modules:
        return None, None
    from prefect.context import FlowRunContext, TaskRunContext

    task = TaskRunContext.get()
    if task is not None:
        return task.task.name, folder_of((task.parameters or {}).get("out_dir"))
    flow = FlowRunContext.get()
    if flow is not None and flow.flow is not None:
        if flow.flow.name == "scailflow-batch":
            return "batch", None
        return "run", flow.flow_run.name if flow.flow_run else None
    return None, None


def label(stage: str | None = None, folder: str | None = None) -> str:
    """`stage` or, in a batch, `[folder] stage`; both from this thread's run when not given."""
    ctx_stage, ctx_folder = run_context()
    stage = stage or ctx_stage or "scailflow"
    folder = folder or ctx_folder
    return f"[{folder}] {stage}" if folder and _SETTINGS["show_folder"] else stage


def _record_stage(record: logging.LogRecord) -> tuple[str, str | None]:
    folder = None
    stage = getattr(record, "task_name", None)
    if stage is not None:
        folder = _FOLDERS.get(str(getattr(record, "task_run_id", "")))
        if folder is None and RUN_NAME_SEP in str(getattr(record, "task_run_name", "")):
            folder = record.task_run_name.split(RUN_NAME_SEP, 1)[1]
    if stage is None and getattr(record, "flow_name", None):
        stage = "batch" if record.flow_name == "scailflow-batch" else "run"
        folder = None if stage == "batch" else getattr(record, "flow_run_name", None)
    ctx_stage, ctx_folder = run_context()
    if stage is None:
        stage = ctx_stage
    folder = folder or ctx_folder
    if stage is None:
        name = record.name
        while name and name not in STAGE_OF_LOGGER:
            name = name.rpartition(".")[0]
        stage = STAGE_OF_LOGGER.get(name, record.name.split(".")[0])
    return stage, folder


# ------------------------------------------------------------------------------------------------ Prefect's words
_FAILED = re.compile(r"^Finished in state (Failed|Crashed)\((?:'|\")(.*)(?:'|\")(?:, type=\w+)?\)$", re.S)
_RETRY = re.compile(r"^Task run failed with (?:exception|state): (.*) - Retry (\d+)/(\d+) will start (.*)$", re.S)
_EXCEPTION_PREFIX = re.compile(r"^(?:Task|Flow) run encountered an exception (\w+): ", re.S)
_HIDDEN = (
    "Finished in state Completed",
    "Beginning flow run",
    "Beginning subflow run",
    "Starting temporary server",
    "Stopping temporary server",
    "Created task run",
    "Executing ",
    "Submitting task run",
    "Task run failed with exception",  # the retry/final line below, or the stage's own failure line, says it
    "Encountered exception during execution",
    "Pausing all deployments",  # `serve` stopping: the command says so in one line
    "All deployments have been paused",
)


def plain_message(record: logging.LogRecord, stage: str) -> str | None:
    """The console's wording of a record; None hides it."""
    msg = record.getMessage().removeprefix(f"{stage}: ")
    if not record.name.startswith("prefect"):
        return msg
    if msg.startswith("View at "):
        return "follow it in the Prefect UI: " + msg.removeprefix("View at ")
    if msg.startswith("Finished in state Cached"):
        return "cached: inputs unchanged, not run again"
    if msg.startswith("Finished in state NotReady"):
        return "not run: an earlier stage of this folder failed"
    retry = _RETRY.match(msg)
    if retry:
        what, n, of, when = retry.groups()
        return f"failed ({_short(what)}); retry {n} of {of} {when.replace(' second(s) from now', ' s from now')}"
    failed = _FAILED.match(msg)
    if failed:
        if getattr(record, "task_name", None) is None:  # a flow's outcome: the command prints it itself
            return None
        return "failed: " + _EXCEPTION_PREFIX.sub("", failed.group(2)).strip()
    if msg.startswith(_HIDDEN) or "KeyboardInterrupt" in msg:  # Ctrl-C: the command says it in one line
        return None
    return msg


def _short(exc_repr: str) -> str:
    """`TimeoutError('read timed out')` -> `TimeoutError: read timed out`."""
    m = re.match(r"^(\w+)\((['\"])(.*)\2\)$", exc_repr, re.S)
    return f"{m.group(1)}: {m.group(3)}" if m else exc_repr


# ------------------------------------------------------------------------------------------------ the handler
class ConsoleHandler(logging.Handler):
    """Root handler: each record as `stage: message` (`[folder] stage: message` in a batch), above the bars.

    A record's `console` extra: False keeps it for the Prefect UI's log only; "summary" hides it where the command
    prints its own summary (run, batch) and shows it where none does (a scheduled run under `serve`)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if getattr(record, "progress_line", False) and TERMINAL.bars_on:
                return  # the bar shows it
            shown = getattr(record, "console", True)
            if shown is False or (shown == "summary" and _SETTINGS["own_summary"]):
                return  # for the Prefect UI's log only (or the command prints its own summary)
            if _SETTINGS["debug"]:
                text = self.format(record)
                prefix = f"{record.name}: "
                stage = None
            else:
                prefix = getattr(record, "stage_label", None)
                stage, folder = _record_stage(record)
                text = plain_message(record, stage)
                if text is None:
                    return
                if prefix is None:
                    prefix = f"[{folder}] {stage}" if folder and _SETTINGS["show_folder"] else stage
                prefix += ": "
                if record.levelno >= logging.ERROR and not text.startswith(("failed", "error", "not run")):
                    text = "error: " + text
                elif record.levelno == logging.WARNING:
                    text = "warning: " + text
            TERMINAL.print_line(text, prefix, STAGE_STYLE.get(stage or "", ""))
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


# ------------------------------------------------------------------------------------------------ native stderr
NATIVE_NOISE = re.compile(
    rb"^(?:INFO: Created TensorFlow Lite"  # TF-Lite's delegate banner
    rb"|WARNING: All log messages before absl::InitializeLog\(\)"  # absl, once
    rb"|[IW]\d{4} [\d:. ]+\d+ [\w./-]+:\d+\]"  # absl/glog INFO and WARNING lines (errors still pass)
    rb"|INFO: Initialized TensorFlow Lite runtime"
    rb")"
)
_NATIVE: dict = {}


def silence_native_stderr() -> None:
    """Filter what C/C++ code writes to file descriptor 2 (mediapipe's TF-Lite and absl logging ignore every
    environment switch): fd 2 becomes a pipe read by a thread that drops the known noise and passes the rest on.
    Python's own `sys.stderr` writes straight to the terminal, so bars and terminal detection are unaffected."""
    if _NATIVE:
        return
    try:
        sys.stderr.flush()
        real = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:
        return
    os.set_inheritable(2, True)
    sys.stderr = os.fdopen(real, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    _NATIVE.update(real=real, read=read_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            pending = b""
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip() and not NATIVE_NOISE.match(line):
                        os.write(real, line + b"\n")
            if pending.strip() and not NATIVE_NOISE.match(pending):
                os.write(real, pending + b"\n")

    thread = threading.Thread(target=pump, name="scailflow-native-stderr", daemon=True)
    thread.start()

    def drain() -> None:  # at exit: let the last lines through (a child's final words, a C++ error)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            return
        thread.join(timeout=0.3)

    atexit.register(drain)


# ------------------------------------------------------------------------------------------------ setup
def setup(debug: bool = False, quiet: bool = False, native: bool = False, show_folder: bool = False) -> None:
    """Route logging through ConsoleHandler and decide bars vs plain lines. `native`: also filter what C/C++ code
    writes to fd 2 (only for a process of our own: it rewires the process's stderr)."""
    _SETTINGS.update(debug=debug, show_folder=show_folder)
    if native:
        silence_native_stderr()
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, ConsoleHandler) or type(h).__name__ in ("StreamHandler", "PrefectConsoleHandler"):
            root.removeHandler(h)
    handler = ConsoleHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    # third parties say warnings and errors; our own loggers (and Prefect's, by PREFECT_LOGGING_LEVEL) say more.
    # Prefect's logging setup resets the root level later, so ours is set on "scailflow" itself.
    root.setLevel(logging.WARNING)
    logging.getLogger("scailflow").setLevel(logging.WARNING if quiet else logging.INFO)
    if quiet:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    for noisy in ("httpx", "httpcore", "urllib3", "PIL", "matplotlib", "asyncio", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    interactive = sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    TERMINAL.bars_on = interactive and not quiet


def adopt() -> None:
    """In a flow run that Prefect's runner started in its own process (`scailflow serve`), which never passed
    through our command line: the same quiet, stage-named console, folders named."""
    if os.environ.get("PREFECT__FLOW_RUN_ID") and not any(
        isinstance(h, ConsoleHandler) for h in logging.getLogger().handlers
    ):
        setup(native=True, show_folder=True)
        _SETTINGS["own_summary"] = False  # no command around it prints a summary: the flow's own lines say it
        logging.getLogger("prefect.flow_runs").setLevel(logging.NOTSET)  # `serve` quietened its start


def show_folders(on: bool = True) -> None:
    """Name the folder on every line (batches, workers)."""
    _SETTINGS["show_folder"] = on
