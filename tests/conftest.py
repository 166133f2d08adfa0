"""Shared test fixtures: paths to the conformance data beside the project, and one `scailflow server` for the whole
session, and one Prefect test harness (starting either costs tens of seconds on a loaded machine). Helpers live in `tests/support/`."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCAILFLOW_SHARED", ROOT.parent / "shared"))
CONFORMANCE = SHARED / "conformance"

import tempfile  # noqa: E402

# tests never touch the user's ~/.scailflow or ~/.prefect, and never see a running server or a real key
_HOME = Path(tempfile.mkdtemp(prefix="scailflow-tests-"))
os.environ["SCAILFLOW_HOME"] = str(_HOME)
os.environ["PREFECT_HOME"] = str(_HOME / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["SCAILFLOW_PORT"] = "1"  # nothing listens there: flows use the test harness / a temporary API
for _var in ("PREFECT_API_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY", "GEMINI_BASE_URL"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def conformance() -> Path:
    if not CONFORMANCE.is_dir():
        pytest.fail(f"conformance data not found at {CONFORMANCE} (set SCAILFLOW_SHARED)")
    return CONFORMANCE


# Prefect server services that no test using the session's server or harness needs, off for those two only (Prefect's
# documented settings; never in the product, nor in the temporary APIs and servers that tests start themselves):
# automations (triggers), work-pool health (foreman), marking runs Late, pause timeouts, the workers' cleanup queue.
# Kept: the scheduler (scheduled pipelines fire), the lease repossessor (a killed run's GPU slot is freed),
# cancellation cleanup, and the event and task-run recorders (the UI). Idle, a server then costs ~20% less CPU.
UNUSED_SERVICES_OFF = {
    f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
    for name in ("TRIGGERS", "FOREMAN", "LATE_RUNS", "PAUSE_EXPIRATIONS", "CLEANUP_RECONCILER")
}


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness (a temporary API on a temporary database), started once for every test that runs flows
    in this process (each start costs ~10 s, more on a loaded machine)."""
    from unittest import mock

    from prefect.testing.utilities import prefect_test_harness

    with contextlib.ExitStack() as stack:
        with mock.patch.dict(os.environ, UNUSED_SERVICES_OFF):  # seen by its server process only
            stack.enter_context(prefect_test_harness(server_startup_timeout=120))
        yield


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory):
    """One `scailflow server` on a free port (never Prefect's default 4200), with its own data dir, for every test
    that only needs a server to report to; yields (url, env for clients of it). Tests that stop or break their
    server, or need another database, start their own with `tests.support.processes.scailflow_server`."""
    from tests.support.processes import scailflow_server

    with scailflow_server(tmp_path_factory.mktemp("shared-server") / "home", **UNUSED_SERVICES_OFF) as (url, env):
        yield url, {k: v for k, v in env.items() if k not in UNUSED_SERVICES_OFF}  # clients as users run them


@pytest.fixture
def report_to_shared_server(shared_server, monkeypatch):
    """`scailflow` processes this test starts find the session's server (as a user's runs find theirs) instead of
    each starting a temporary API (~6 s of CPU per run). Tests of the temporary API itself do not use this."""
    monkeypatch.setenv("SCAILFLOW_PORT", shared_server[1]["SCAILFLOW_PORT"])


def pytest_collection_modifyitems(config, items):
    """Modules holding a `slow` test first: spread over workers (tests/run: pytest-xdist, a module per unit), the
    longest units start at once instead of one of them running alone at the end."""
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow)  # stable: the rest keep their order


def pytest_runtest_logreport(report):
    """A test skipped for want of a Debian package (tests/support/system.need): remembered for the last line, also
    when it ran in an xdist worker (its report comes here, its memory does not)."""
    if report.skipped and (found := re.search(r"Debian's `([\w.+-]+)` is not installed", str(report.longrepr))):
        from tests.support.system import MISSING

        MISSING.add(found[1])


def pytest_unconfigure(config):
    """The session's last line when tests were skipped for want of a Debian package: the command that installs it."""
    from tests.support.system import install_line

    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and (line := install_line()):
        reporter.write_line(line, yellow=True)
