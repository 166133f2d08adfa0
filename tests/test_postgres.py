"""The same flows against a Prefect server backed by PostgreSQL (Debian's postgresql, started here on 127.0.0.1)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from scailflow.files import write_text_atomic
from tests.support.folders import make_folder
from tests.support.processes import free_port, get, scailflow_server
from tests.support.system import need

pytestmark = pytest.mark.integration  # starts processes/servers/full flows


def pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture
def postgres():
    initdb = need("postgresql", "initdb", pattern="/usr/lib/postgresql/*/bin/initdb")
    pg_ctl = need("postgresql", "pg_ctl", pattern="/usr/lib/postgresql/*/bin/pg_ctl")
    base = Path(tempfile.mkdtemp(prefix="scailflow-pg-"))  # pytest's tmp dirs are closed to other users
    os.chmod(base, 0o755)
    data, sock = base / "pgdata", base / "pgsock"
    data.mkdir()
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
        shutil.chown(sock, "postgres")
    port = free_port()
    subprocess.run(
        as_postgres([initdb, "-D", str(data), "-U", "scailflow", "--auth=trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        as_postgres(
            [
                pg_ctl,
                "-D",
                str(data),
                "-w",
                "-l",
                str(data / "log"),
                "-o",
                f"-p {port} -k {sock} -c listen_addresses=127.0.0.1",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            as_postgres(
                [pg_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "scailflow", "prefect"]
            ),
            check=True,
            capture_output=True,
        )
        yield f"postgresql+asyncpg://scailflow@127.0.0.1:{port}/prefect", port
    finally:
        subprocess.run(as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_batch_against_a_postgres_backed_server(postgres, tmp_path):
    url_db, pg_port = postgres
    with scailflow_server(tmp_path / "home", PREFECT_API_DATABASE_CONNECTION_URL=url_db) as (api, env):
        clips = tmp_path / "clips"
        clips.mkdir()
        make_folder(clips, "pg1", frames=5, size=64)
        make_folder(clips, "pg2", frames=5, size=64)
        write_text_atomic(
            tmp_path / "pipelines.yaml",
            "model: {model: tiny-random}\npipelines:\n  - name: pg\n"
            "    root: clips\n    options: {sampling: {steps: 1, target_h: 32, target_w: 32}}\n",
        )
        r = subprocess.run(
            [sys.executable, "-m", "scailflow.cli", "batch", str(tmp_path / "pipelines.yaml")],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "2 of 2 folders done" in r.stdout and api in r.stdout
        _, body = get(api + "/api/flow_runs/filter", {"flows": {"name": {"any_": ["scailflow-batch"]}}})
        assert [run["state"]["type"] for run in json.loads(body)] == ["COMPLETED"]
        rows = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(pg_port),
                "-U",
                "scailflow",
                "-d",
                "prefect",
                "-tAc",
                "select count(*) from task_run",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert int(rows.stdout.strip()) >= 8  # 4 stages x 2 folders, stored in PostgreSQL
