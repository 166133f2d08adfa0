"""The GPU defaults, decided on the CPU: how many DiT blocks stay resident under --vram_budget_gb with block offload,
whether the DiT is compiled when no flag says, and where compiled kernels are cached across processes."""

from __future__ import annotations

import argparse

import pytest
import torch
from diffusers.hooks import HookRegistry

from scailflow.scail.offload import plan_resident_blocks, stream_blocks
from scailflow.scail.options import ModelOptions
from scailflow.scail.speed import compile_cache_dir, decide_compile, use_compile_cache
from tests.test_scail_speed import rel, tiny_inputs, tiny_model

H200 = {"name": "NVIDIA H200", "capability": (9, 0), "triton": True}


# ------------------------------------------------------------------------------------------------ block offload
def test_no_budget_streams_every_block():
    assert plan_resident_blocks(40, 0.76, 1.4, None)[0] == 0


def test_budget_keeps_as_many_blocks_as_fit():
    # 14B bf16: 0.76 GiB per block, ~1.4 GiB outside the blocks; 24 GiB for weights: 1.4 + (k + 2) * 0.76 <= 24
    resident, why = plan_resident_blocks(40, 0.76, 1.4, 24)
    assert resident == 27 and "budget" in why
    assert 1.4 + (resident + 2) * 0.76 <= 24 < 1.4 + (resident + 3) * 0.76
    # a larger budget never keeps fewer blocks
    counts = [plan_resident_blocks(40, 0.76, 1.4, b)[0] for b in (4, 8, 16, 24, 32, 48)]
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_budget_for_the_whole_dit_streams_nothing():
    resident, why = plan_resident_blocks(40, 0.76, 1.4, 40)
    assert resident == 40 and "nothing streams" in why


def test_budget_below_the_minimum_streams_everything(caplog):
    resident, why = plan_resident_blocks(40, 0.76, 1.4, 2)
    assert resident == 0 and "minimum" in why
    assert "below the least" in caplog.text


def test_resident_blocks_lose_their_hooks_and_the_output_is_unchanged():
    model = tiny_model()
    inputs = tiny_inputs()
    with torch.no_grad():
        expected = model(**inputs)
    stream_blocks(model, 1, "cpu", use_stream=False)  # CUDA streams need a GPU; the grouping is the same
    hooks = [HookRegistry.check_if_exists_or_initialize(b).get_hook("group_offloading") for b in model.blocks]
    assert hooks[0] is None and hooks[1] is not None
    with torch.no_grad():
        assert rel(model(**inputs), expected) == 0.0


# ------------------------------------------------------------------------------------------------ compile default
@pytest.mark.parametrize(
    "opts,device,gpu,on,reason",
    [
        (ModelOptions(), "cpu", None, False, "not on a CUDA GPU"),
        (ModelOptions(), "cuda", H200, True, "NVIDIA H200"),
        (ModelOptions(compile=False), "cuda", H200, False, "--no-compile"),
        (ModelOptions(compile=True), "cpu", None, True, "--compile"),
        (ModelOptions(), "cuda", dict(H200, triton=False), False, "Triton"),
        (ModelOptions(), "cuda", dict(H200, capability=(7, 5)), False, "sm75"),
        (ModelOptions(offload="block"), "cuda", H200, False, "block offload"),
    ],
)
def test_decide_compile(opts, device, gpu, on, reason):
    decided, why = decide_compile(opts, device, gpu)
    assert decided is on and reason in why


def test_no_compile_flag_and_default():
    from scailflow.options import add_flags, from_flags

    p = argparse.ArgumentParser()
    add_flags(p, ModelOptions)
    assert from_flags(ModelOptions, p.parse_args([])).compile is None  # auto
    assert from_flags(ModelOptions, p.parse_args(["--no-compile"])).compile is False
    assert from_flags(ModelOptions, p.parse_args(["--compile"])).compile is True


# ------------------------------------------------------------------------------------------------ compile cache
def test_compile_cache_is_keyed_by_torch_gpu_and_settings(tmp_path):
    base = compile_cache_dir(ModelOptions(), "NVIDIA H200", home=tmp_path)
    assert base.parent == tmp_path / "compile"
    assert torch.__version__.split("+")[0] in base.name and "NVIDIA_H200" in base.name
    others = {
        compile_cache_dir(ModelOptions(fp8=True), "NVIDIA H200", home=tmp_path),
        compile_cache_dir(ModelOptions(), "NVIDIA H100 80GB HBM3", home=tmp_path),
        compile_cache_dir(ModelOptions(attention="cudnn"), "NVIDIA H200", home=tmp_path),
        compile_cache_dir(ModelOptions(offload="block"), "NVIDIA H200", home=tmp_path),
    }
    assert base not in others and len(others) == 4
    assert compile_cache_dir(ModelOptions(), "NVIDIA H200", home=tmp_path) == base  # stable


def test_use_compile_cache_sets_inductor_dir_unless_the_user_did(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    got = use_compile_cache(tmp_path / "k")
    assert got == tmp_path / "k" and got.is_dir()
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "k")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_compile_cache(tmp_path / "other") == tmp_path / "mine"


def test_inductor_default_in_the_variable_is_replaced(tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what Inductor leaves after a first look
    assert use_compile_cache(tmp_path / "k") == tmp_path / "k"
