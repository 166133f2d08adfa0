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


def server_environ(host: str, port: int) -> dict[str, str]:
    """The environment of `prefect server start` on host:port. Its UI asks its own settings where the API is, and
    Prefect answers 127.0.0.1:4200 unless told: so PREFECT_UI_API_URL follows the chosen host and port (a
    wildcard bind is reached through 127.0.0.1 here; set PREFECT_UI_API_URL yourself for other machines)."""
    environ = dict(os.environ)
    environ.pop("PREFECT_API_URL", None)  # the server's own clients talk to itself
    browser_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in browser_host and not browser_host.startswith("["):
        browser_host = f"[{browser_host}]"
    environ.setdefault("PREFECT_UI_API_URL", f"http://{browser_host}:{port}/api")
    environ["PREFECT_SERVER_API_HOST"] = host
    environ["PREFECT_SERVER_API_PORT"] = str(port)
    return environ


def configure(use_local_server: bool = True) -> str:
    """Set Prefect's home, logging and API; returns 'server <url>' or 'ephemeral' (a temporary local API)."""
    home = data_dir()
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the temporary API of a server-less run starts in ~10 s here, more on a busy machine: wait for it, not 20 s
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "scailflow")
    os.environ.setdefault("PREFECT_SERVER_API_HOST", "127.0.0.1")
    if os.environ.get("PREFECT_API_URL"):
        return f"server {os.environ['PREFECT_API_URL']}"
    url = server_url()
    if use_local_server and server_running(url):
        os.environ["PREFECT_API_URL"] = url
        return f"server {url}"
    return "ephemeral"
