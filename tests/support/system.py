"""System programs a few tests need from Debian (headless chromium for the UI test, PostgreSQL for the production
server test). `tests/run` installs them when it can (root with apt-get). Where they are absent, their tests skip and
the session ends with one line naming the install command; where the run insists (SCAILFLOW_TESTS_NEED_SYSTEM=1, as
`.ci/run` and `tests/run` after installing set it), an absent program fails its test instead."""

from __future__ import annotations

import glob
import os
import shutil

import pytest

MISSING: set[str] = set()  # Debian packages whose tests were skipped this session
NEED_ENV = "SCAILFLOW_TESTS_NEED_SYSTEM"


def install_line() -> str | None:
    """The session's last line when tests were skipped for want of a package, else None."""
    if not MISSING:
        return None
    return f"some tests skipped: install what they need with `apt-get install -y {' '.join(sorted(MISSING))}`"


def need(package: str, *names: str, pattern: str | None = None) -> str:
    """The path of the first of `names` found (on PATH, or under the glob `pattern`), else skip this test (or fail
    it, where the run insists) and remember the package for the session's last line."""
    found = sorted(glob.glob(pattern)) if pattern else []
    path = found[-1] if found else next((shutil.which(n) for n in names if shutil.which(n)), None)
    if path:
        return path
    message = f"{names[0]} not found: Debian's `{package}` is not installed (`apt-get install -y {package}`)"
    if os.environ.get(NEED_ENV) == "1":
        pytest.fail(message)
    MISSING.add(package)
    pytest.skip(message)
