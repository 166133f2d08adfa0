"""Prefect's environment for scailflow: state under one project data dir, the local server used when it runs.

Called before Prefect is imported (settings are read at import time).
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

DEFAULT_PORT = 4200


def data_dir() -> Path:
    """SCAILFLOW_HOME, default ~/.scailflow: Prefect's database, results and the server's state live here."""
    return Path(os.environ.get("SCAILFLOW_HOME", Path.home() / ".scailflow"))


def server_url(port: int | None = None) -> str:
    return f"http://127.0.0.1:{port or int(os.environ.get('SCAILFLOW_PORT', DEFAULT_PORT))}/api"


def server_running(url: str, timeout: float = 0.3) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def make_private(path: Path) -> Path:
    """A directory only its owner can enter (0700), and its SQLite database files 0600 (logs, parameters, prompts
    and instructions are in there). New files are private too: the CLI runs with umask 077."""
    path.mkdir(parents=True, exist_ok=True)
    if path.stat().st_uid != os.getuid():  # someone else's directory (a shared install): theirs to protect
        return path
    path.chmod(0o700)
    for db in path.glob("*.db*"):  # prefect.db, its -wal and -shm (SQLite gives those the database's mode)
        if db.is_file() and db.stat().st_uid == os.getuid():
            db.chmod(0o600)
    return path


def configure(use_local_server: bool = True) -> str | None:
    """Set Prefect's home, logging and API; returns the Prefect server's API URL, or None when runs use a temporary
    local API (Prefect's ephemeral mode).
    SCAILFLOW_HOME and Prefect's home in it are private (0700)."""
    home = make_private(data_dir())
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    make_private(Path(os.environ["PREFECT_HOME"]))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the temporary API of a server-less run starts in ~10 s here, more on a busy machine: wait for it, not 20 s
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # no client telemetry either (and no first-run notice in the terminal)
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "scailflow")
    os.environ.setdefault("PREFECT_SERVER_API_HOST", "127.0.0.1")
    if os.environ.get("PREFECT_SERVER_API_AUTH_STRING"):  # a protected server on this machine: our clients log in
        os.environ.setdefault("PREFECT_API_AUTH_STRING", os.environ["PREFECT_SERVER_API_AUTH_STRING"])
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    url = server_url()
    if use_local_server and server_running(url):
        os.environ["PREFECT_API_URL"] = url
        return url
    return None
