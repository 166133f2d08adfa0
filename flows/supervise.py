"""Supervising Prefect around the commands: the `prefect server` child of `scailflow server` (its output relayed
without Prefect's banner, stopped with us), the watch that ends a run whose server went away for good, and the
deadline after Ctrl-C on `serve` (Prefect's runner shutdown was seen to hang under load).

The commands themselves (flows/cli.py) only wire arguments to these.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

LOST_SERVER_EXIT = 4
AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"
STOPPED_SERVING = "stopped serving: the schedules are paused until `scailflow serve` runs again"
SERVE_STOP_GRACE_S = 20.0


def ui_address(api_url: str) -> str:
    """The UI's address for a Prefect API URL (the API lives under /api)."""
    return api_url.removesuffix("/api")


# ---------------------------------------------------------------------------------------------- a run's server
def watch_server(api_url: str | None, interval_s: float = 5.0, misses: int = 3) -> None:
    """With a Prefect server (`api_url`), stop the run cleanly if the server goes away for good; without one, nothing.

    Prefect's engine cannot report states without its API and would retry for minutes; outputs are written
    atomically and finished stages are cached locally, so the honest move is to stop and say how to resume.
    """
    if api_url is None:
        return
    from scailflow.flows import env

    def loop() -> None:
        missed = 0
        while True:
            time.sleep(interval_s)
            missed = 0 if env.server_running(api_url, timeout=2) else missed + 1
            if missed >= misses:
                sys.stdout.flush()
                print(
                    f"error: lost the Prefect server at {ui_address(api_url)} during the run; outputs "
                    "finished so far are kept and cached: start `scailflow server` again and re-run to resume",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(LOST_SERVER_EXIT)

    threading.Thread(target=loop, name="scailflow-server-watch", daemon=True).start()


# ---------------------------------------------------------------------------------------------- serve's Ctrl-C
class StopServing:
    """Ctrl-C on `serve`: Prefect's runner pauses the schedules and returns. Its shutdown was seen to hang on a loaded
    machine (not reproduced alone), so `grace` seconds after Ctrl-C the schedules are paused here and the process
    exits anyway, with the same one line; a second Ctrl-C exits at once."""

    def __init__(self, deployments, grace: float):
        self.deployments, self.grace = deployments, grace
        self.lock = threading.Lock()  # whoever holds it says the last line: Prefect's way out, or the deadline
        self.timer: threading.Timer | None = None
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        if self.timer is not None:
            os._exit(130)
        self.timer = threading.Timer(self.grace, self._pause_and_exit)
        self.timer.daemon = True
        self.timer.start()
        raise KeyboardInterrupt  # what Python does by default: Prefect's serve shuts its runner down on it

    def _pause_and_exit(self) -> None:
        if not self.lock.acquire(blocking=False):
            return  # Prefect's shutdown finished first
        line = STOPPED_SERVING
        try:
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                for d in self.deployments:
                    client.pause_deployment(client.read_deployment_by_name(d.full_name).id)
        except Exception as e:  # noqa: BLE001 - the process is leaving: say what the user must do
            line = (
                f"stopped serving, but the schedules could not be paused ({e.__class__.__name__}): pause them in the UI"
            )
        print(line, file=sys.stderr, flush=True)
        os._exit(130)

    def finished(self) -> None:
        """Prefect's shutdown is done: the deadline is off (or, if it already fired, it ends the process)."""
        self.lock.acquire()
        if self.timer is not None:
            self.timer.cancel()


# ---------------------------------------------------------------------------------------------- the server child
def exposure_warning(host: str) -> str | None:
    """What to say when the server listens beyond this machine (None on loopback)."""
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    if os.environ.get(AUTH_ENV):
        return (
            f"warning: --host {host}: the Prefect API and UI are reachable from the network; they ask for "
            f"{AUTH_ENV} (HTTP basic auth: put TLS in front of it, e.g. a reverse proxy)"
        )
    return (
        f"warning: --host {host} exposes the Prefect API and UI (runs, logs, prompts, parameters) to the network "
        f"WITHOUT authentication; set {AUTH_ENV}=user:password for the server (clients: PREFECT_API_AUTH_STRING)"
    )


def run_prefect_server(host: str, port: int, debug: bool = False) -> int:
    """`prefect server start` as our child until it ends (its exit code) or Ctrl-C (130); its output relayed without
    Prefect's banner and advice (all of it with `debug`); a stop signal stops it with us."""
    from scailflow import stop

    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    # the server's own address, which its UI calls; no questions (in a terminal `prefect server start` would stop to
    # ask which Prefect profile to change)
    own = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/api"
    environ = dict(os.environ, PREFECT_API_URL=own, PREFECT_CLI_PROMPT="false")
    environ.setdefault("PREFECT_UI_API_URL", own)
    child = subprocess.Popen(cmd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def forward() -> None:  # the server's own words, less its banner and advice meant for Prefect users
        for line in child.stdout:
            if debug or not _server_chatter(line):
                print(line.rstrip("\n"), flush=True)

    relay = threading.Thread(target=forward, name="scailflow-server-output", daemon=True)
    relay.start()

    def stop_server() -> None:  # SIGTERM / SIGINT (scailflow/stop.py): the server goes with us
        child.terminate()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()

    stop.on_stop(stop_server)
    stop.set_note("the Prefect server is stopped")
    try:
        code = child.wait()
        relay.join(timeout=5)
        return code
    except KeyboardInterrupt:  # Ctrl-C reached the server too (same process group): let it shut down
        try:
            child.wait(timeout=30)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            child.kill()
        relay.join(timeout=5)
        print("server stopped", file=sys.stderr)
        return 130


_BANNER = set(" _|/\\()")
_SERVER_CHATTER = (
    "Configure Prefect to communicate with the server",
    "prefect config set PREFECT_API_URL",
    "View the API reference documentation",
    "Check out the dashboard",
    "Server stopped!",
)


def _server_chatter(line: str) -> bool:
    text = line.strip()
    return not text or set(text) <= _BANNER or text.startswith(_SERVER_CHATTER)
