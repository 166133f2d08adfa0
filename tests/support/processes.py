"""`scailflow` as a user runs it: one command to completion (`cli`), a long-running one whose output is read as it
comes (`Process.wait_for(text, deadline)`: woken by each new line, not by a fixed sleep), a `scailflow server` on a
free port (`scailflow_server`), and waiting on a condition with a deadline (`wait_until`)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SCAILFLOW = [sys.executable, "-m", "scailflow.cli"]


def cli(*args, env=None, cwd=None, timeout: float = 600, prefix=(), memory_gib: int | None = None):
    """`scailflow ARGS` to completion, text output captured. `prefix` runs it under another command (e.g. setpriv);
    `memory_gib` caps its address space (a YAML bomb on a build without the fix must not take the machine's memory)."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory_gib << 30, memory_gib << 30))

    return subprocess.run(
        [*prefix, *SCAILFLOW, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        preexec_fn=limit if memory_gib else None,
    )


def one_error(r: subprocess.CompletedProcess, *fragments: str) -> str:
    """The run failed on bad input as a user must see it: exit 2, one `error:` line holding every fragment, no
    traceback. Returns that line."""
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
    assert len(errors) == 1, r.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert "Traceback" not in r.stderr
    return errors[0]


def wait_until(condition: Callable[[], object], deadline: float, what: str, every: float = 0.2, alive=None):
    """Poll `condition` until it returns something true (returned) or `deadline` seconds pass (the test fails with
    `what`, or `what()` if it is callable). `alive`, a Popen, fails the wait at once if that process has ended."""
    end = time.monotonic() + deadline
    while True:
        found = condition()
        if found:
            return found
        if alive is not None and alive.poll() is not None:
            pytest.fail(f"the process ended (exit {alive.returncode}) first: " + (what() if callable(what) else what))
        if time.monotonic() > end:
            pytest.fail(f"not within {deadline:.0f} s: " + (what() if callable(what) else what))
        time.sleep(every)


class Process:
    """A command in its own session (a signal reaches it alone, as `kill PID` sends it), stdout and stderr read line
    by line into `out` and `err` (one list, `out`, when `merge`). Use as a context manager: the whole process group
    is killed on exit."""

    def __init__(self, args, *, env=None, merge: bool = True, scailflow: bool = True, cwd=None):
        cmd = [*SCAILFLOW, *map(str, args)] if scailflow else list(map(str, args))
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
            text=True,
            env=dict(env if env is not None else os.environ, PYTHONUNBUFFERED="1"),
            cwd=cwd,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.out: list[str] = []
        self.err: list[str] = self.out if merge else []
        self._changed = threading.Condition()
        streams = [(self.proc.stdout, self.out)] + ([] if merge else [(self.proc.stderr, self.err)])
        self._readers = [threading.Thread(target=self._read, args=s, daemon=True) for s in streams]
        for reader in self._readers:
            reader.start()

    @property
    def lines(self) -> list[str]:
        return self.out

    def _read(self, stream, into: list[str]) -> None:
        for line in iter(stream.readline, ""):
            with self._changed:
                into.append(line)
                self._changed.notify_all()
        with self._changed:  # end of output: a waiter learns the process is ending
            self._changed.notify_all()

    def text(self) -> str:
        return "".join(self.out) if self.err is self.out else "".join(self.out + self.err)

    def wait_for(self, text: str | re.Pattern, deadline: float = 300, stream: str = "out") -> str:
        """The first line holding `text` (or matching the pattern), waiting for it up to `deadline` seconds; fails
        the test (with the last lines) if the process ends or the deadline passes first."""
        lines = self.err if stream == "err" else self.out
        seen = text.search if isinstance(text, re.Pattern) else (lambda ln: text in ln)
        end = time.monotonic() + deadline
        with self._changed:
            while True:
                found = next((ln for ln in lines if seen(ln)), None)
                if found is not None:
                    return found
                if self.proc.poll() is not None and not any(r.is_alive() for r in self._readers):
                    pytest.fail(f"exit {self.proc.returncode} before {text!r}:\n" + "".join(lines[-30:]))
                left = end - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no {text!r} within {deadline:.0f} s:\n" + "".join(lines[-30:]))
                self._changed.wait(min(left, 1.0))

    def finish(self, timeout: float = 30) -> int:
        """Wait for the exit, then for every line written before it; returns the exit code."""
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    def signal_group(self, sig: int) -> None:
        """`sig` to the whole process group: what Ctrl-C in a terminal does."""
        os.killpg(self.pid, sig)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)


# --------------------------------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, data: dict | None = None):
    """GET (or POST `data` as JSON) `url`; returns (status, body)."""
    req = urllib.request.Request(
        url, data=json.dumps(data).encode() if data is not None else None, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()


def healthy(url: str) -> bool:
    try:
        return get(f"{url}/api/health")[0] == 200
    except OSError:
        return False


@contextlib.contextmanager
def scailflow_server(home: Path, **extra_env) -> Iterator[tuple[str, dict]]:
    """`scailflow server` on a free port with its own data dir; yields (url, env for clients of it)."""
    port = free_port()
    env = dict(os.environ, SCAILFLOW_HOME=str(home), SCAILFLOW_PORT=str(port), **extra_env)
    env.pop("PREFECT_HOME", None)
    server = Process(["server", "--port", port], env=env)  # its output drained: a full pipe would stall it
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: healthy(url),
            120,
            lambda: "the server did not come up:\n" + server.text()[-3000:],
            every=0.25,
            alive=server.proc,
        )
        yield url, env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.proc.wait(timeout=30)
