"""Weights found for you: `scailflow models download|list` through huggingface_hub against a local server speaking
the hub's API (HF_ENDPOINT), and the SCAIL-2 release found in the Hugging Face cache without flags."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.support.hub import Hub

pytestmark = pytest.mark.integration

CHUNK = 10 * 1024 * 1024  # huggingface_hub writes what it received in chunks of this size (constants)
DWPOSE = {"yolox_l.onnx": os.urandom(3 * CHUNK), "dw-ll_ucoco_384.onnx": os.urandom(40_000), "README.md": b"# pose\n"}


def env_for(hub: Hub, tmp_path: Path) -> dict:
    return dict(
        os.environ,
        HF_ENDPOINT=hub.url,
        HF_HUB_CACHE=str(tmp_path / "hf"),
        SCAILFLOW_HOME=str(tmp_path / "home"),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_ETAG_TIMEOUT="5",
    )


def cli(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "scailflow.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_download_resumes_checks_and_lists(tmp_path):
    with Hub({"yzd-v/DWPose": DWPOSE}) as hub:
        env = env_for(hub, tmp_path)
        assert "dwpose           yzd-v/DWPose: not downloaded" in cli("models", "list", env=env).stdout
        hub.cut_first_get.add("yolox_l.onnx")  # the connection drops half-way through the big file
        r = cli("models", "download", "dwpose", env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "dwpose: 2 file(s), 31.5 MB, sizes and hashes match the hub's" in r.stdout
        assert hub.ranges and hub.ranges[0][0] == "yolox_l.onnx"  # resumed with a byte range, not restarted
        assert hub.ranges[0][1] == f"bytes={CHUNK}-"  # the chunk written before the cut is kept
        paths = [Path(line.strip()) for line in r.stdout.splitlines()[1:]]
        assert {p.name: p.read_bytes() for p in paths} == {
            k: DWPOSE[k] for k in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")
        }
        listed = cli("models", "list", env=env).stdout
        assert "dwpose           yzd-v/DWPose: 2 file(s), 31.5 MB in " in listed
        n = len(hub.gets)
        assert cli("models", "download", "dwpose", env=env).returncode == 0
        assert len(hub.gets) == n  # already in the cache: nothing fetched again


def test_a_hash_mismatch_is_one_line(tmp_path):
    with Hub({"yzd-v/DWPose": DWPOSE}) as hub:
        hub.lie_sha256.add("dw-ll_ucoco_384.onnx")
        r = cli("models", "download", "dwpose", env=env_for(hub, tmp_path))
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "dw-ll_ucoco_384.onnx: its hash differs from the hub's" in r.stderr


def training_checkpoint(conformance) -> bytes:
    from tests.test_scail_checkpoint import official_to_training

    sd = load_file(str(conformance / "tiny_scail2_state_dict.safetensors"))
    buf = io.BytesIO()
    torch.save({"module": official_to_training(sd)}, buf)
    return buf.getvalue()


def py(code: str, env: dict) -> subprocess.CompletedProcess:
    """A new process, as a user's next command (huggingface_hub reads HF_HUB_CACHE when it is imported)."""
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


FIND = "from scailflow.scail.hub import release_paths; print(release_paths())"


def test_release_in_the_cache_is_found_and_converted_once(tmp_path, conformance):
    release = {
        "Wan2.1_VAE.pth": b"vae bytes",
        "model/1/fsdp2_rank_0000_checkpoint.pt": training_checkpoint(conformance),
        "README.md": b"# SCAIL-2\n",
    }
    with Hub({"zai-org/SCAIL-2": release}) as hub:
        env = env_for(hub, tmp_path)
        r = cli("models", "download", "release", env=env)  # what `hf download zai-org/SCAIL-2` leaves
        assert r.returncode == 0, r.stderr[-2000:]
    env["HF_HUB_OFFLINE"] = "1"  # found without the network
    r = py(FIND, env)
    assert r.returncode == 0, r.stderr[-2000:]
    ckpt_dir, dit = eval(r.stdout)  # a (str, str) tuple
    assert (Path(ckpt_dir) / "Wan2.1_VAE.pth").read_bytes() == b"vae bytes"
    assert Path(dit).parent == tmp_path / "home" / "models"
    sd = load_file(str(conformance / "tiny_scail2_state_dict.safetensors"))
    assert set(load_file(dit)) == set(sd)
    stamp = os.stat(dit).st_mtime_ns
    again = py(FIND, env)
    assert eval(again.stdout) == (ckpt_dir, dit) and os.stat(dit).st_mtime_ns == stamp  # converted once
    assert "converting" not in again.stderr


def test_no_release_keeps_the_download_hint(tmp_path):
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "empty"), HF_HUB_OFFLINE="1")
    for k in ("SCAILFLOW_CKPT_DIR", "SCAILFLOW_SCAIL_PATH"):
        env.pop(k, None)
    assert py(FIND, env).stdout.strip() == "None"
    load = (
        "from scailflow.scail.loading import load_pipeline as f; from scailflow.scail.options import ModelOptions as M"
    )
    r = py(load + "; f(M(device='cpu'))", env)
    assert r.returncode == 1 and "no SCAIL-2 checkpoint configured" in r.stderr
