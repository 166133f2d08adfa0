"""Switchable speed-ups (scail/speed.py), the multi-GPU plan (scail/parallel.py) and the benchmark script, on CPU."""

from __future__ import annotations

import argparse
import os
import socket

import pytest
import torch
import torch.nn as nn

from scailflow.scail import attention, parallel, speed
from scailflow.scail.model import SCAIL2Transformer, tiny_config
from scailflow.scail.options import ModelOptions

FP8 = getattr(torch, "float8_e4m3fn", None)
needs_fp8 = pytest.mark.skipif(FP8 is None, reason="this torch has no float8 dtypes")


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def tiny_model(seed=0):
    torch.manual_seed(seed)
    m = SCAIL2Transformer(**SCAIL2Transformer.config_from_official(tiny_config())).eval()
    with torch.no_grad():  # non-trivial modulation so every block does real work
        for b in m.blocks:
            b.scale_shift_table.normal_(0, 0.5)
    return m


def tiny_inputs(batch=1, seed=1, T=2, h=8, w=8):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(
        x=r(batch, 16, T, h, w),
        t=torch.full((batch,), 700.0),
        context=r(batch, 20, 32),
        clip_fea=r(batch, 257, 1280),
        ref_latents=r(batch, 16, 1, h, w),
        ref_masks=torch.rand(batch, 28, 1, h, w, generator=g),
        pose_latents=r(batch, 16, T, h // 2, w // 2),
        driving_masks=torch.rand(batch, 28, T, h // 2, w // 2, generator=g),
    )


# ------------------------------------------------------------------------------------------------ fp8
@needs_fp8
def test_rowwise_quantize_dequantize():
    t = torch.randn(64, 256) * torch.logspace(-2, 2, 64)[:, None]  # rows of very different magnitude
    q, s = speed.quantize_rowwise(t)
    assert q.dtype == FP8 and s.shape == (64, 1) and s.dtype == torch.float32
    back = speed.dequantize(q, s)
    row_err = (back - t).norm(dim=1) / t.norm(dim=1)
    assert float(row_err.max()) < 0.05  # e4m3: 3 mantissa bits, each row on its own scale
    assert torch.allclose(q.float().abs().amax(1), torch.full((64,), torch.finfo(FP8).max))  # each row uses the range
    z = torch.zeros(3, 32)
    qz, sz = speed.quantize_rowwise(z)  # all-zero rows do not divide by zero
    assert torch.equal(speed.dequantize(qz, sz), z)


@needs_fp8
def test_fp8_linear_close_to_linear_and_keeps_dtype():
    torch.manual_seed(0)
    lin = nn.Linear(64, 48)
    f = speed.FP8Linear(lin)
    assert f.weight_fp8.dtype == FP8 and f.weight_scale.shape == (1, 48)
    x = torch.randn(2, 5, 64)
    out = f(x)
    assert out.shape == (2, 5, 48) and out.dtype == torch.float32
    assert rel(out, lin(x)) < 0.05
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert f(x).dtype == torch.bfloat16


@needs_fp8
def test_fp8_swap_keeps_tiny_model_output_close():
    m = tiny_model()
    inp = tiny_inputs()
    with torch.no_grad():
        ref = m(**inp)
        n = speed.fp8_blocks(m)
        out = m(**inp)
    assert n == 2 * 12  # per block: q,k,v,o self-attn + q,k,v,o,k_img,v_img cross-attn + 2 FFN
    assert not any(isinstance(x, nn.Linear) for x in m.blocks.modules())
    assert 0 < rel(out, ref) < 0.05


# ------------------------------------------------------------------------------------------------ attention, fusion
def test_resolve_attention():
    assert attention.resolve_attention("auto", "cpu") == "sdpa"
    assert attention.resolve_attention("cudnn", "cpu") == "cudnn"
    with pytest.raises(ValueError):
        attention.resolve_attention("bogus")


def test_apply_speedups_sdpa_leaves_output_unchanged():
    m = tiny_model()
    inp = tiny_inputs()
    with torch.no_grad():
        ref = m(**inp)
        applied = speed.apply_speedups(m, ModelOptions(attention="sdpa"))
        out = m(**inp)
    assert applied == {"attention": "sdpa"}
    assert torch.equal(out, ref)


def test_fused_qkv_same_output():
    m = tiny_model()
    inp = tiny_inputs()
    with torch.no_grad():
        ref = m(**inp)
        assert speed.fuse_qkv(m) == 4  # self- and cross-attention of 2 blocks
        out = m(**inp)
    assert rel(out, ref) < 1e-5


# ------------------------------------------------------------------------------------------------ step cache
def test_first_block_cache_skips_the_tail_blocks():
    m = tiny_model()
    inp = tiny_inputs()
    calls = {"n": 0}
    m.blocks[-1].attn1.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    with torch.no_grad():
        ref = m(**inp)
        speed.apply_speedups(m, ModelOptions(step_cache=0.05))
        outs = []
        for _ in range(3):  # same inputs three times: block 0's residual does not change
            with speed.cache_context(m, "cond"):
                outs.append(m(**inp))
    assert calls["n"] == 1 + 1  # the uncached reference, then only the first cached call runs the last block
    for o in outs:
        assert rel(o, ref) < 1e-5
    speed.reset_step_cache(m)
    with torch.no_grad(), speed.cache_context(m, "cond"):
        m(**inp)
    assert calls["n"] == 3  # after a reset the tail runs again


def test_cache_context_is_a_no_op_without_cache():
    m = tiny_model()
    inp = tiny_inputs()
    calls = {"n": 0}
    m.blocks[-1].attn1.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    with torch.no_grad():
        ref = m(**inp)
        for _ in range(2):  # without a step cache nothing is skipped: every call runs the tail, same output
            with speed.cache_context(m, "cond"):
                assert torch.equal(m(**inp), ref)
        speed.reset_step_cache(m)
        assert torch.equal(m(**inp), ref)
    assert calls["n"] == 4


# ------------------------------------------------------------------------------------------------ options
def test_cli_speed_flags():
    from scailflow.options import from_flags
    from scailflow.scail.cli import add_generate_arguments, strip_gpus_flag

    p = argparse.ArgumentParser()
    add_generate_arguments(p)
    base = ["--image", "a", "--mask_image", "b", "--pose", "c", "--mask_video", "d", "--save_file", "e.mp4"]
    assert from_flags(ModelOptions, p.parse_args(base)).speedups() == {}
    args = p.parse_args(
        base + ["--attention", "cudnn", "--compile", "--fp8", "--step_cache", "0.05", "--gpus", "2", "--vae_tiling"]
    )
    assert from_flags(ModelOptions, args).speedups() == {
        "attention": "cudnn",
        "compile": True,
        "fp8": True,
        "step_cache": 0.05,
        "vae_tiling": True,
    }
    assert args.gpus == 2
    assert strip_gpus_flag(["--gpus", "2", "--x", "--gpus=4", "y"]) == ["--x", "y"]


# ------------------------------------------------------------------------------------------------ parallel plan
@pytest.mark.parametrize(
    "world,cfg,expect",
    [
        (1, True, (1, 1, False)),
        (2, True, (2, 1, False)),
        (2, False, (1, 2, False)),
        (4, True, (2, 2, False)),
        (8, True, (2, 4, False)),
        (3, True, (1, 3, True)),
        (6, True, (2, 3, True)),
        (5, False, (1, 5, False)),
    ],
)
def test_plan_parallel(world, cfg, expect):
    plan = parallel.plan_parallel(world, cfg, heads=40)
    assert (plan.cfg_degree, plan.ulysses_degree, plan.ulysses_anything) == expect
    assert plan.cfg_degree * plan.ulysses_degree == world
    ranks = sorted(r for g in plan.cfg_group_ranks() for r in g)
    assert ranks == list(range(world)) == sorted(r for g in plan.ulysses_group_ranks() for r in g)
    for r in range(world):
        c, u = plan.coords(r)
        assert c * plan.ulysses_degree + u == r
        assert r in plan.cfg_group_ranks()[u] and r in plan.ulysses_group_ranks()[c]


def test_plan_takes_the_heads_of_the_model_that_was_built():
    """The Ulysses plan reads the head count from the model's config (the checkpoint's config.json), not a constant:
    2 heads over 4 Ulysses ranks need `ulysses_anything`, where the released model's 40 would not."""
    two_heads = SCAIL2Transformer(
        **SCAIL2Transformer.config_from_official(tiny_config(dim=256, num_heads=2, ffn_dim=256))
    )
    assert parallel.attention_heads(two_heads) == 2
    assert parallel.plan_parallel(4, False, parallel.attention_heads(two_heads)).ulysses_anything
    assert not parallel.plan_parallel(4, False, 40).ulysses_anything


def test_branch_and_combine():
    assert parallel.branch_context("p", "n", 0) == "p" and parallel.branch_context("p", "n", 1) == "n"
    from scailflow.scail.pipeline import combine_cfg

    c, u = torch.ones(3), torch.zeros(3)
    assert torch.equal(combine_cfg(c, u, 5.0), torch.full((3,), 5.0))


def test_batched_cfg_matches_sequential_cfg():
    from scailflow.scail.pipeline import BatchedCFG, SCAIL2Pipeline

    inp = tiny_inputs()
    neg = torch.randn(1, 20, 32, generator=torch.Generator().manual_seed(5))
    kw = {k: v for k, v in inp.items() if k not in ("x", "t", "context")}
    pipe = SCAIL2Pipeline(tiny_model(), None, None, None, None)
    with torch.no_grad():
        seq = pipe.predict(inp["x"], inp["t"][0], [inp["context"][0]], [neg[0]], 4.0, kw)
        pipe.cfg = BatchedCFG()
        bat = pipe.predict(inp["x"], inp["t"][0], [inp["context"][0]], [neg[0]], 4.0, kw)
        cond = pipe.predict(inp["x"], inp["t"][0], [inp["context"][0]], None, 4.0, kw)
    assert rel(bat, seq) < 1e-5 and rel(cond, seq) > 1e-3  # guidance changed the prediction, both ways alike


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg_worker(rank, world, port, q):
    import torch.distributed as dist

    from scailflow.scail.pipeline import SCAIL2Pipeline

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        m = tiny_model()
        pipe = SCAIL2Pipeline(m, None, None, None, None)
        plan = parallel.plan_parallel(world, True, parallel.attention_heads(m))
        c, u = plan.coords(rank)
        pipe.cfg = parallel.ParallelCFG(parallel.ParallelState(plan, rank, c, u, parallel.make_cfg_groups(plan, rank)))
        inp = tiny_inputs()
        neg = torch.randn(1, 20, 32, generator=torch.Generator().manual_seed(5))
        kw = {k: v for k, v in inp.items() if k not in ("x", "t", "context")}
        with torch.no_grad():
            out = pipe.predict(inp["x"], inp["t"][0], [inp["context"][0]], [neg[0]], 4.0, kw)
        q.put((rank, out.numpy()))  # plain bytes: a tensor goes by shared-memory fd, lost if this process exits first
    finally:
        dist.destroy_process_group()


@pytest.mark.integration
def test_cfg_parallel_two_ranks_matches_one_process():
    import torch.multiprocessing as mp

    from scailflow.scail.pipeline import SCAIL2Pipeline

    inp = tiny_inputs()
    neg = torch.randn(1, 20, 32, generator=torch.Generator().manual_seed(5))
    kw = {k: v for k, v in inp.items() if k not in ("x", "t", "context")}
    with torch.no_grad():
        ref = SCAIL2Pipeline(tiny_model(), None, None, None, None).predict(
            inp["x"], inp["t"][0], [inp["context"][0]], [neg[0]], 4.0, kw
        )
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_cfg_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for r in range(2):
        assert rel(torch.from_numpy(results[r]), ref) < 1e-5  # both ranks hold the same guided prediction


# ------------------------------------------------------------------------------------------------ benchmark script
def test_bench_dit_tiny_runs(tmp_path):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_dit

    out = tmp_path / "dit.json"
    variants = "eager,qkv,fp8,fp8+flash3+fp8attn" if FP8 is not None else "eager,qkv"
    argv = ["--tiny", "--size", "896x512,704x1280", "--variants", variants, "--repeats", "1", "--json", str(out)]
    assert bench_dit.main(argv) == 0
    sizes = json.loads(out.read_text())["sizes"]
    assert [s["size"] for s in sizes] == ["896x512", "704x1280"]  # one table per size, one process
    for res in sizes:
        names = [v["variant"] for v in res["variants"]]
        assert names[0] == "eager" and all("s_per_forward" in v for v in res["variants"])
        assert all(v["rel_err"] < 0.05 for v in res["variants"])
        assert "| eager |" in res["table"]
    if FP8 is not None:  # FlashAttention 3 emulated on the CPU, fp8 self-attention on
        assert sizes[0]["variants"][-1]["fp8_attention"] is True


def test_load_pipeline_speed_hook():
    from scailflow.scail.loading import load_pipeline

    pipe = load_pipeline(
        ModelOptions(model="tiny-random", device="cpu", attention="sdpa", step_cache=0.1, vae_tiling=True)
    )
    assert pipe.speedups == {"attention": "sdpa", "step_cache": "firstblock:0.1"}
    assert pipe.vae.use_tiling and pipe.transformer.is_cache_enabled


@pytest.mark.slow
@pytest.mark.integration
def test_generate_gpus_2_cfg_parallel_same_video_as_one_process(tmp_path):
    """`scailflow generate --gpus 2` (torchrun, gloo on CPU, CFG split over 2 ranks) writes the single-process video."""
    import subprocess
    import sys

    import numpy as np

    from scailflow.media import read_video
    from tests.support.folders import write_prepared

    write_prepared(tmp_path)
    common = [
        "--image",
        tmp_path / "ref.png",
        "--mask_image",
        tmp_path / "ref_mask.png",
        "--pose",
        tmp_path / "rendered_v2.mp4",
        "--mask_video",
        tmp_path / "rendered_mask_v2.mp4",
        "--model",
        "tiny-random",
        "--target_h",
        64,
        "--target_w",
        32,
        "--steps",
        2,
        "--seed",
        5,
    ]
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"out{n}.mp4"
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "scailflow.cli",
                "generate",
                *map(str, common),
                "--save_file",
                str(out),
                "--gpus",
                str(n),
            ],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        outs[n], _ = read_video(out)
    assert outs[1].shape == outs[2].shape
    diff = np.abs(outs[1].astype(int) - outs[2].astype(int))
    # the same floats up to summation order (torchrun runs one thread per rank); the uint8 truncation (official)
    # turns a last-bit difference just under a level into a whole level, and H.264 spreads that a little, so:
    # almost every pixel equal, none far off (another seed differs by ~100 levels on average)
    assert (diff == 0).mean() > 0.9 and np.percentile(diff, 99.9) <= 6 and diff.max() <= 24
    assert not list(tmp_path.glob("out2.mp4.*partial*"))
