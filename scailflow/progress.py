"""Progress of the long loops: rich bars on a terminal (done/total, s/step, ETA), plain lines otherwise.

Stage libraries call `report(what, done, total)` in their loops (or wrap one in `iterate`); it does nothing unless a
caller installed a reporter with `reporting(fn)`. The first word of `what` names the bar, the rest is detail:
"denoise segment 1/2" and "denoise segment 2/2" advance the one bar "denoise" (done and total count every step of
every segment, so its ETA is the whole generation's); a long generation's "segment" bar counts finished segments
(a resumed run starts it at the kept ones). Reporters: `terminal(label)` below, and the Prefect progress
artifact of a folder (tasks/progress.py). No Prefect here: libraries and plain commands use it too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from contextvars import ContextVar
from typing import Callable, Iterable, Iterator, TypeVar

ProgressFn = Callable[[str, int, int], None]
T = TypeVar("T")

_CURRENT: ContextVar[ProgressFn | None] = ContextVar("scailflow_progress", default=None)
UNITS = {"denoise": "step", "segment": "segment"}  # everything else counts frames
log = logging.getLogger("scailflow.progress")


def report(what: str, done: int, total: int) -> None:
    """Tell the installed reporter (if any) that `done` of `total` units of `what` are finished."""
    fn = _CURRENT.get()
    if fn is not None:
        fn(what, done, total)


@contextlib.contextmanager
def reporting(fn: ProgressFn | None) -> Iterator[ProgressFn | None]:
    """Install `fn` as the reporter of this thread's (and its copied contexts') `report` calls."""
    token = _CURRENT.set(fn)
    try:
        yield fn
    finally:
        _CURRENT.reset(token)


def iterate(items: Iterable[T], what: str, total: int) -> Iterator[T]:
    """Yield `items`, reporting 0 before the first and i after the i-th."""
    report(what, 0, total)
    for i, item in enumerate(items, start=1):
        yield item
        report(what, i, total)


def bar_name(what: str) -> str:
    return what.split(" ", 1)[0]


def unit_of(what: str) -> str:
    return UNITS.get(bar_name(what), "frame")


def clock(seconds: float) -> str:
    """0:07, 3:05, 1:02:03."""
    s = int(round(max(0.0, seconds)))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def rate_text(seconds_per_unit: float | None, unit: str) -> str:
    if seconds_per_unit is None:
        return f"-- s/{unit}"
    if seconds_per_unit < 0.1:
        return f"{1 / max(seconds_per_unit, 1e-9):.0f} {unit}s/s"
    return f"{seconds_per_unit:.2f} s/{unit}"


class Loop:
    """One loop's numbers; the rate counts from the first report this bar saw (its start may predate the bar)."""

    def __init__(self, label: str, what: str, done: int, total: int):
        self.label, self.what, self.unit = label, what, unit_of(what)
        self.done, self.total = done, max(1, total)
        self.base, self.started = done, time.perf_counter()
        self.line_done, self.line_at = done, self.started
        self.task_id = None

    def update(self, what: str, done: int, total: int) -> None:
        self.what, self.done, self.total = what, done, max(1, total)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def seconds_per_unit(self) -> float | None:
        n = self.done - self.base
        return self.elapsed / n if n > 0 else None

    @property
    def eta(self) -> float | None:
        spu = self.seconds_per_unit
        return None if spu is None else spu * max(0, self.total - self.done)

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def line(self) -> str:
        """The plain line: `denoise segment 1/2: 12/80 steps · 7.81 s/step · ETA 8:51`."""
        eta = "--:--" if self.eta is None else clock(self.eta)
        return (
            f"{self.what}: {self.done}/{self.total} {self.unit}s · {rate_text(self.seconds_per_unit, self.unit)} "
            f"· ETA {eta}"
        )

    def summary(self) -> str:
        return (
            f"{bar_name(self.what)}: {self.total} {self.unit}s in {clock(self.elapsed)} "
            f"({rate_text(self.seconds_per_unit, self.unit)})"
        )


class Terminal:
    """This process's progress display on stderr: live rich bars on a terminal, throttled plain lines otherwise.

    Plain lines are log records of `scailflow.progress` (so they carry the stage prefix and reach Prefect's log);
    the console handler hides them while bars are drawn. A finished bar leaves one summary line.
    """

    PLAIN_EVERY_FRACTION = 0.1  # plain lines: every tenth of a loop, at most every interval / 5 seconds ...

    @property
    def interval(self) -> float:
        """... and at least every SCAILFLOW_PROGRESS_INTERVAL seconds (default 10) while a loop runs."""
        try:
            return max(0.0, float(os.environ.get("SCAILFLOW_PROGRESS_INTERVAL", 10)))
        except ValueError:
            return 10.0

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._bars: dict[tuple[str, str], Loop] = {}
        self._progress = None
        self._refreshed = 0.0
        self.bars_on = False  # set by scailflow.console.setup: stderr is a terminal and not --quiet

    # -------------------------------------------------------------------------------- output
    def console(self):
        from rich.console import Console

        if not hasattr(self, "_console"):
            self._console = Console(stderr=True, highlight=False, soft_wrap=True)
        return self._console

    def print_line(self, text: str, prefix: str = "", style: str = "") -> None:
        """One line above the bars (or plainly on stderr)."""
        with self._lock:
            if self.bars_on:
                from rich.text import Text

                line = Text()
                if prefix:
                    line.append(prefix, style=style or "bold cyan")
                line.append(text)
                self.console().print(line, soft_wrap=True, markup=False, highlight=False)
            else:
                stream = sys.stderr
                stream.write(prefix + text + "\n")
                stream.flush()

    # -------------------------------------------------------------------------------- bars
    def _live(self):
        if self._progress is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold cyan]{task.fields[label]}[/] {task.description}"),
                BarColumn(bar_width=28),
                TextColumn("{task.completed}/{task.total} {task.fields[unit]}s"),
                TextColumn("· {task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("· ETA {task.fields[eta]}"),
                console=self.console(),
                transient=True,
                auto_refresh=True,
                refresh_per_second=4,
            )
            self._progress.start()
        return self._progress

    def _draw(self, bar: Loop, force: bool) -> None:
        progress = self._live()
        fields = dict(
            label=bar.label,
            unit=bar.unit,
            rate=rate_text(bar.seconds_per_unit, bar.unit),
            eta="--:--" if bar.eta is None else clock(bar.eta),
        )
        if bar.task_id is None:
            bar.task_id = progress.add_task(bar.what, total=bar.total, completed=bar.done, **fields)
        else:
            progress.update(bar.task_id, description=bar.what, total=bar.total, completed=bar.done, **fields)
        now = time.perf_counter()
        if force or now - self._refreshed > 0.1:
            progress.refresh()
            self._refreshed = now

    def _drop(self, key: tuple[str, str]) -> None:
        bar = self._bars.pop(key)
        if self._progress is not None and bar.task_id is not None:
            self._progress.remove_task(bar.task_id)
            if not self._bars:
                self._progress.stop()
                self._progress = None

    def update(self, label: str, what: str, done: int, total: int) -> None:
        with self._lock:
            key = (label, bar_name(what))
            bar = self._bars.get(key)
            if bar is None or done < bar.done:  # a new loop (or the same one restarted)
                if bar is not None:
                    self._drop(key)
                bar = self._bars[key] = Loop(label, what, done, total)
            else:
                bar.update(what, done, total)
            since, every = time.perf_counter() - bar.line_at, self.interval
            plain_due = since >= every or (
                since >= every / 5 and bar.done - bar.line_done >= self.PLAIN_EVERY_FRACTION * bar.total
            )
            if bar.done > bar.base and plain_due and not bar.finished:
                bar.line_done, bar.line_at = bar.done, time.perf_counter()
                log.info("%s", bar.line(), extra={"progress_line": True, "stage_label": label})
            if self.bars_on:
                self._draw(bar, force=bar.finished or bar.done == bar.base)
            if bar.finished:
                self._drop(key)
                if bar.total > 1:  # a single image is not worth a line
                    log.info("%s", bar.summary(), extra={"stage_label": label})

    def close(self, label: str) -> None:
        """Remove the bars of `label` (its stage ended, maybe with an error)."""
        with self._lock:
            for key in [k for k in self._bars if k[0] == label]:
                self._drop(key)


TERMINAL = Terminal()


def terminal(label: str) -> ProgressFn:
    """A reporter drawing bars named `label` (e.g. "masks", "[clip] generate")."""

    def fn(what: str, done: int, total: int) -> None:
        TERMINAL.update(label, what, done, total)

    return fn
