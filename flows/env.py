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


def configure(use_local_server: bool = True) -> str:
    """Set Prefect's home, logging and API; returns 'server <url>' or 'ephemeral' (a temporary local API)."""
    home = data_dir()
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the temporary API of a server-less run starts in ~10 s here, more on a busy machine: wait for it, not 20 s
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # no client telemetry either (and no first-run notice in the terminal)
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "scailflow")
    os.environ.setdefault("PREFECT_SERVER_API_HOST", "127.0.0.1")
    if os.environ.get("PREFECT_API_URL"):
        return f"server {os.environ['PREFECT_API_URL']}"
    url = server_url()
    if use_local_server and server_running(url):
        os.environ["PREFECT_API_URL"] = url
        return f"server {url}"
    return "ephemeral"
