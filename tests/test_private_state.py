"""Private state and exposed servers (issue 16, points 7 and 8): outputs follow the user's umask while scailflow's own
state (Prefect's database with logs, parameters and prompts, its WAL, the pickled results) is private; a server
listening beyond loopback says so and takes Prefect's API auth string; the Gemini key is redacted in every spelling
an echo may give it."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from scailflow.files import write_text_atomic
from scailflow.prompts.gemini import redact
from tests.support.folders import make_folder
from tests.support.gemini import FakeGemini, error_reply
from tests.support.processes import free_port, wait_until

JOB = "sampling: {steps: 1, target_h: 64, target_w: 64, seed: 1}\n"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


@pytest.mark.slow
@pytest.mark.integration
def test_outputs_follow_the_umask_and_state_is_private(tmp_path):
    folder = make_folder(tmp_path, frames=5, size=64)
    write_text_atomic(folder / "job.yaml", JOB)
    home = tmp_path / "home"
    env = dict(os.environ, SCAILFLOW_HOME=str(home), PREFECT_HOME=str(home / "prefect"))
    r = subprocess.run(
        [sys.executable, "-m", "scailflow.cli", "run", str(folder), "--model", "tiny-random"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = folder / "scailflow"
    outputs = [out, *out.rglob("*")]
    assert {p.name for p in outputs} >= {"output.mp4", "output.mp4.json", "run.json", "prompt.txt", "ref_mask.png"}
    wrong = {str(p): oct(_mode(p)) for p in outputs if _mode(p) != (0o755 if p.is_dir() else 0o644)}
    assert not wrong, wrong  # shared storage: others can read the results
    state = [home, *home.rglob("*")]
    names = {p.name for p in state}
    assert {"prefect.db", "prefect.db-wal", "storage"} <= names, names
    assert any(p.parent.name == "storage" for p in state)  # the pickled task results
    wrong = {str(p): oct(_mode(p)) for p in state if _mode(p) != (0o700 if p.is_dir() else 0o600)}
    assert not wrong, wrong  # logs, parameters, prompts: nobody else's business


@pytest.mark.integration
def test_an_existing_world_readable_home_is_made_private(tmp_path):
    home = tmp_path / "home"
    (home / "prefect").mkdir(parents=True)
    for name in ("prefect.db", "prefect.db-wal"):
        (home / "prefect" / name).write_bytes(b"")
        (home / "prefect" / name).chmod(0o644)
    home.chmod(0o755)
    env = dict(os.environ, SCAILFLOW_HOME=str(home), PREFECT_HOME=str(home / "prefect"))
    code = "from scailflow.flows import env; env.configure(use_local_server=False)"
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert _mode(home) == 0o700 and _mode(home / "prefect") == 0o700
    assert _mode(home / "prefect" / "prefect.db") == 0o600 and _mode(home / "prefect" / "prefect.db-wal") == 0o600


def _request(url: str, auth: str | None = None, body: dict | None = None) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:  # not listening (yet, or any more)
        return 0


def test_exposure_warning_only_beyond_loopback(monkeypatch):
    from scailflow.flows.cli import exposure_warning

    monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING", raising=False)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert exposure_warning(host) is None
    for host in ("0.0.0.0", "::", "192.168.1.20", "myhost.lan"):
        assert "WITHOUT authentication" in exposure_warning(host)
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "admin:pw")
    assert "WITHOUT" not in exposure_warning("0.0.0.0") and "TLS" in exposure_warning("0.0.0.0")


@pytest.mark.integration
def test_server_on_the_network_warns_and_takes_the_auth_string(tmp_path):
    port = free_port()
    home = tmp_path / "home"
    auth = "admin:s3cret-pass"
    env = dict(
        os.environ,
        SCAILFLOW_HOME=str(home),
        PREFECT_HOME=str(home / "prefect"),
        SCAILFLOW_PORT=str(port),
        PREFECT_SERVER_API_AUTH_STRING=auth,
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "scailflow.cli", "server", "--host", "0.0.0.0", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(server.stderr.readline()), daemon=True)
        reader.start()
        reader.join(60)  # the warning comes before anything else, or not at all
        warning = first[0] if first else ""
        assert warning.startswith("warning: --host 0.0.0.0") and "PREFECT_SERVER_API_AUTH_STRING" in warning
        api = f"http://127.0.0.1:{port}/api"
        wait_until(lambda: _request(f"{api}/health") == 200, 180, "server did not start", every=0.25, alive=server)
        assert _request(f"{api}/flows/filter", body={}) == 401  # no credentials: refused
        assert _request(f"{api}/flows/filter", auth="admin:wrong", body={}) == 401
        assert _request(f"{api}/flows/filter", auth=auth, body={}) == 200
        # our own commands on this machine log in with the same string (PREFECT_API_AUTH_STRING is derived)
        folder = make_folder(tmp_path, frames=5, size=64)
        write_text_atomic(folder / "job.yaml", JOB)
        r = subprocess.run(
            [sys.executable, "-m", "scailflow.cli", "run", str(folder), "--model", "tiny-random"],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        assert r.returncode == 0 and f"127.0.0.1:{port}" in r.stdout, r.stderr[-3000:]
        children = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
        os.kill(server.pid, signal.SIGTERM)  # stopping `scailflow server` stops the Prefect server it started
        assert server.wait(30) == 143
        wait_until(lambda: not any(Path(f"/proc/{c}").exists() for c in children), 15, f"children left: {children}")
        assert _request(f"{api}/health") != 200
    finally:
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------------------------- 8. redaction
SECRET = "AIza/Te+st=secret key-0123456789"


def _echoes(key: str) -> list[str]:
    half = len(key) // 2
    return [
        key,
        urllib.parse.quote(key, safe=""),
        urllib.parse.quote_plus(key),
        re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), urllib.parse.quote(key, safe="")),  # lowercase hex
        json.dumps(key)[1:-1],
        json.dumps(key).replace("/", "\\/")[1:-1],
        "".join(f"\\u{ord(c):04x}" for c in key),
        key[:half] + "\n  " + key[half:],
        " ".join(key),
        key[:half] + "\\n" + key[half:],
    ]


@pytest.mark.parametrize("key", [SECRET, "AIzaTEST-secret-key-0123456789"])
def test_redaction_catches_encoded_and_split_keys(key):
    for echo in _echoes(key):
        text = f"API key not valid: {echo}. Please pass a valid API key."
        out = redact(text, key)
        assert "***" in out and "API key not valid: " in out and "Please pass a valid API key." in out, (echo, out)
        for form in _echoes(key):
            assert form not in out, (echo, out)
    assert redact("nothing to hide here", key) == "nothing to hide here"
    assert redact("AIzaOTHER-key", key) == "AIzaOTHER-key"


@pytest.mark.integration
def test_prompt_command_never_prints_an_echoed_key(tmp_path):
    from tests.support.gemini import KEY

    folder = make_folder(tmp_path, frames=5, size=64)
    fake = FakeGemini()
    echoes = _echoes(SECRET)
    try:
        for echo in (echoes[1], echoes[4], echoes[7], echoes[8]):  # URL-encoded, JSON-escaped, wrapped, spaced
            fake.script = [error_reply(400, "INVALID_ARGUMENT", f"API key not valid: {echo}")]
            env = dict(os.environ, GEMINI_API_KEY=SECRET, GEMINI_BASE_URL=fake.url, NO_PROXY="127.0.0.1")
            r = subprocess.run(
                [sys.executable, "-m", "scailflow.cli", "prompt", "--video", str(folder / "driving.mp4")]
                + ["--image", str(folder / "ref.png"), "--instruction", "replace the astronaut"],
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
            )
            assert r.returncode == 2 and "API key not valid: ***" in r.stderr, (echo, r.stderr[-2000:])
            for form in echoes:
                assert form not in r.stdout + r.stderr, (echo, r.stderr[-2000:])
    finally:
        fake.close()
    assert KEY != SECRET
