"""Shared test fixtures: paths to the conformance data beside the project."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCAILFLOW_SHARED", ROOT.parent / "shared"))
CONFORMANCE = SHARED / "conformance"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def conformance() -> Path:
    if not CONFORMANCE.is_dir():
        pytest.fail(f"conformance data not found at {CONFORMANCE} (set SCAILFLOW_SHARED)")
    return CONFORMANCE
