"""bench/write_release.py: the random-weight release folder loads through the product's own loading path, and its
full-size layout has the real model's sizes (counted on the meta device, nothing allocated)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import write_release  # noqa: E402

from scailflow.scail.loading import T5_FILE, VAE_FILE, load_pipeline, torch_load_weights  # noqa: E402
from scailflow.scail.options import ModelOptions  # noqa: E402


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("release")
    write_release.write_release(out, "tiny", device="cpu", log=lambda *_: None)
    return out


def params(spec) -> int:
    return sum(math.prod(shape) for _, shape, _ in spec)


def test_full_size_layout_has_the_real_sizes():
    full = write_release.SCALES["full"]
    assert abs(params(write_release.dit_spec(full["dit"], torch.bfloat16)) / 1e9 - 16.4) < 0.2  # SCAIL-14B
    assert abs(params(write_release.t5_spec(full["t5"], torch.bfloat16)) / 1e9 - 5.68) < 0.05  # umt5-xxl encoder
    assert abs(params(write_release.clip_spec(full["clip"], torch.float16)) / 1e6 - 632) < 5  # ViT-H/14 visual
    assert abs(params(write_release.vae_spec(full["vae_dim"])) / 1e6 - 127) < 2  # Wan2.1_VAE.pth, 508 MB fp32


def test_tiny_release_files_read_as_official_ones(release):
    for name in (VAE_FILE, T5_FILE, write_release.CLIP_FILE):
        sd = torch_load_weights(release / name)  # weights_only + mmap, as the loader reads them
        t = next(v for k, v in sd.items() if v.dim() >= 2)
        assert t.float().abs().sum() > 0 and torch.isfinite(t.float()).all(), name
    assert (release / "umt5-xxl" / "tokenizer.json").is_file()


def test_tiny_release_loads_through_load_pipeline(release):
    opts = ModelOptions(ckpt_dir=str(release), scail_path=str(release / write_release.DIT_FILE), device="cpu")
    pipe = load_pipeline(opts)
    cfg = write_release.SCALES["tiny"]
    assert pipe.transformer.config.num_attention_heads == cfg["dit"]["num_heads"]  # inferred from the shapes
    assert len(pipe.transformer.blocks) == cfg["dit"]["num_layers"]
    assert pipe.text_encoder.config.d_model == cfg["t5"]["dim"]
    ctx, _ = pipe.encode_prompt("a person dancing", "", False)
    assert ctx[0].shape == (4, cfg["t5"]["dim"]) and torch.isfinite(ctx[0]).all()  # 3 words + </s>


@pytest.mark.integration
def test_generate_on_the_tiny_release(release, tmp_path):
    from tests.test_scail_generate import official_args, write_prepared

    d = write_prepared(tmp_path)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "scailflow.cli",
            "generate",
            *map(str, official_args(d)),
            "--ckpt_dir",
            str(release),
            "--scail_path",
            str(release / write_release.DIT_FILE),
            "--prompt",
            "a woman dancing",
            "--target_h",
            "64",
            "--target_w",
            "64",
            "--sample_steps",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    record = json.loads((d / "out.mp4.json").read_text())
    assert record["model"] == f"SCAIL-2 ({write_release.DIT_FILE})"
    timings = record["timings"]
    for key in ("load", "read", "text", "reference", "driving", "denoise", "decode", "write", "first_step"):
        assert key in timings and timings[key] >= 0
    assert timings["steps"] == 1
    clock = record["process_clock"]  # seconds into the process: imports before the load, generation after it
    assert 0 < clock["load_start"] < clock["generate_start"] < clock["record"]
    assert clock["generate_start"] - clock["load_start"] >= timings["load"] - 0.05


def test_bench_run_gpu_breakdown_and_table():
    import bench_run_gpu

    record = {
        "timings": {
            "load": 60.0,
            "read": 0.5,
            "text": 1.0,
            "reference": 0.5,
            "driving": 2.0,
            "denoise": 80.0,
            "decode": 5.0,
            "write": 1.5,
            "steps": 8,
            "first_step": 40.0,
            "step_median": 5.5,
        },
        "speedups": {"compile": "default"},
        "process_clock": {"load_start": 8.0, "generate_start": 69.0, "record": 166.0},
    }
    b = bench_run_gpu.breakdown(record, 170.0)
    assert b["warmup"] == 34.5 and b["process_other"] == 19.5  # 170 - 150.5 recorded
    assert (b["before_load"], b["load_to_generate"], b["after_record"]) == (8.0, 1.0, 4.0)
    md = bench_run_gpu.table(
        {"generate-fast": {"rc": 0, "wall_s": 170.0, "breakdown": b, "gpu_busy_mean": 0.9}},
        {
            "machine": {"gpu": "NVIDIA H200"},
            "date": "2026-12-07",
            "size": "896x512",
            "frames": 81,
            "clip": "c",
            "release": "/tmp/rel",
        },
    )
    assert (
        "| generate-fast | 0 | 170.0 | 60.0 | 3.5 | 80.0 (8, 40.0, 5.5) | 5.0 | 1.5 | 19.5 (8.0 / 1.0 / 4.0) | 0.9 |"
        in md
    )
