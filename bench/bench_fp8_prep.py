"""fp8 attention input preparation alone at the DiT's shape (1 x 48,832 tokens x 40 heads x 128, bf16): the tensor
ops of scail/fp8_attention.py (eager and compiled) against the fused Triton kernels of
scail/fp8_attention_triton.py, with and without RoPE in front (the RoPE of diffusers' Wan processor as tensor ops,
or applied inside the kernel). Also checks that the fused outputs are the tensor ops' numbers (e4m3 values apart by
at most one grid step, descales and v means to float tolerance), reports the memory traffic the fused path moves,
and sweeps the kernels' launch shape (tile tokens, tiles per program, warps, pipeline stages) on Gaussian inputs.

    python bench/bench_fp8_prep.py --json bench/results/fp8_prep.json

Needs a CUDA GPU for meaningful numbers. A smoke run of the script on the CPU, under Triton's interpreter (its
times mean nothing and are labelled so):

    TRITON_INTERPRET=1 python bench/bench_fp8_prep.py --tokens 256 --heads 2 --no-compile --no-sweep --reps 1 \
        --json /tmp/fp8_prep_smoke.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scailflow.scail.fp8_attention import F8, quantize_qkv  # noqa: E402
from scailflow.scail.fp8_attention_triton import interpreting, quantize_qkv_fused  # noqa: E402
from tests.support.e4m3 import e4m3_steps  # noqa: E402
from tests.support.rope import apply_rope  # noqa: E402

D = 128
LAYERS = 40  # SCAIL-14B blocks: one self-attention preparation each per forward
LAUNCH_KEYS = ("block", "tiles", "warps", "stages")
SWEEP = [(64, 16, 8, 3), (64, 16, 8, 2), (64, 16, 4, 3), (32, 32, 4, 3), (128, 8, 8, 3), (64, 8, 8, 3), (64, 32, 8, 3)]


def timed(fn, cuda: bool, reps: int = 20) -> float:
    """Median ms of `reps` calls after 3 warm-ups (CUDA events on a GPU, wall clock elsewhere)."""
    for _ in range(3):
        fn()
    ts = []
    for _ in range(reps):
        if cuda:
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            ts.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
    return sorted(ts)[len(ts) // 2]


def make_qkv(kind: str, S: int, H: int, device, seed: int = 1):
    g = torch.Generator(device).manual_seed(seed)
    q, k, v = (torch.randn(1, S, H, D, generator=g, device=device) for _ in range(3))
    if kind == "outlier":  # a few shared 10-30x channels in q and k, per-channel offsets on k and v
        ch = torch.randperm(D, generator=g, device=device)[:4]
        boost = 10 + 20 * torch.rand(4, generator=g, device=device)
        q[..., ch] *= boost
        k[..., ch] *= boost
        k += 2 * torch.randn(1, 1, H, D, generator=g, device=device)
        v = v * (0.5 + torch.rand(D, generator=g, device=device)) + torch.randn(D, generator=g, device=device)
    return [t.bfloat16() for t in (q, k, v)]


def rope_tables(S: int, device):
    """(cos, sin), (1, S, 1, D) fp32, every value repeated for its pair (SCAIL2RotaryPosEmbed's format)."""
    pos = torch.arange(S, device=device, dtype=torch.float64)[:, None]
    inv = 10000.0 ** (-torch.arange(D // 2, device=device, dtype=torch.float64) / (D // 2))
    ang = pos * inv
    rep = lambda t: t.float().repeat_interleave(2, -1)[None, :, None, :]  # noqa: E731
    return rep(ang.cos()), rep(ang.sin())


def compare(got, ref) -> dict:
    steps = torch.stack([e4m3_steps(g, r).max() for g, r in zip(got[:3], ref[:3])]).max()
    equal = sum(int(torch.equal(g.view(torch.uint8), r.view(torch.uint8))) for g, r in zip(got[:3], ref[:3]))
    rel = lambda a, b: float(((a - b).abs() / b.abs().clamp_min(1e-30)).max())  # noqa: E731
    return {
        "e4m3_max_steps_apart": int(steps),
        "e4m3_tensors_bit_identical": f"{equal}/3",
        "e4m3_fraction_differing": float(
            sum((g.view(torch.uint8) != r.view(torch.uint8)).sum() for g, r in zip(got[:3], ref[:3]))
            / sum(g.numel() for g in got[:3])
        ),
        "descale_max_rel_diff": max(rel(g, r) for g, r in zip(got[3:6], ref[3:6])),
        "v_mean_max_abs_diff": float((got[6] - ref[6]).abs().max()),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=48832)
    p.add_argument("--heads", type=int, default=40)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--no-sweep", action="store_true", help="skip the launch-shape sweep")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd tensor-ops rows")
    p.add_argument("--json", default="bench/results/fp8_prep.json")
    args = p.parse_args(argv)
    S, H = args.tokens, args.heads
    cuda = torch.cuda.is_available() and not interpreting()
    device = "cuda" if cuda else "cpu"
    if not cuda and not interpreting():
        raise SystemExit("bench_fp8_prep needs a CUDA GPU (or TRITON_INTERPRET=1 for a smoke run on the CPU)")
    import triton

    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or 'unknown'}), Triton interpreter"
    res = {
        "date": when,
        "device": where,
        "timing_meaningful": cuda,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "shape": [1, S, H, D],
        "rows": [],
        "checks": {},
    }
    print(f"# bench_fp8_prep {when} on {where}, torch {torch.__version__}, triton {triton.__version__}", flush=True)
    # what the fused path moves per call: each of q, k, v read twice in bf16, written once in e4m3
    fused_bytes = 3 * (2 * 2 + 1) * S * H * D
    cos, sin = rope_tables(S, device)

    def ops(q, k, v):
        return quantize_qkv(q, k, v, fused=False)

    def ops_rope(q, k, v):
        return quantize_qkv(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, fused=False)

    def fused(q, k, v):
        return quantize_qkv(q, k, v, fused=True)

    def fused_rope(q, k, v):
        return quantize_qkv_fused(q, k, v, rope=(cos, sin))

    variants = {
        "tensor ops, eager": ops,
        "fused Triton": fused,
        "RoPE + tensor ops, eager": ops_rope,
        "fused Triton with RoPE inside": fused_rope,
    }
    if not args.no_compile:
        variants["tensor ops, compiled"] = torch.compile(ops, dynamic=False)
        variants["RoPE + tensor ops, compiled"] = torch.compile(ops_rope, dynamic=False)

    for kind in ("gauss", "outlier"):
        qkv = make_qkv(kind, S, H, device)
        ref, ref_rope = ops(*qkv), ops_rope(*qkv)
        res["checks"][f"{kind}: fused vs tensor ops"] = compare(fused(*qkv), ref)
        res["checks"][f"{kind}: fused with RoPE vs RoPE + tensor ops"] = compare(fused_rope(*qkv), ref_rope)
        print(kind, res["checks"], flush=True)
        for name, fn in variants.items():
            try:
                ms = timed(lambda fn=fn, qkv=qkv: fn(*qkv), cuda, args.reps)
                row = {"inputs": kind, "variant": name, "ms": ms, "x40_layers_ms": ms * LAYERS}
                if name.startswith("fused"):
                    row["GB_per_s"] = fused_bytes / ms / 1e6
            except Exception as e:  # noqa: BLE001 - one failing variant must not lose the others
                row = {"inputs": kind, "variant": name, "error": f"{e.__class__.__name__}: {str(e)[:300]}"}
            res["rows"].append(row)
            print(row, flush=True)
        if (
            kind == "gauss" and not args.no_sweep
        ):  # the launch shape: tile tokens, tiles per program, warps, pipeline stages
            for launch in SWEEP:
                name = "fused Triton, block {} x {} tiles, {} warps, {} stages".format(*launch)
                try:
                    fn = lambda qkv=qkv, launch=launch: quantize_qkv_fused(*qkv, **dict(zip(LAUNCH_KEYS, launch)))  # noqa: E731
                    ms = timed(fn, cuda, args.reps)
                    row = {"inputs": kind, "variant": name, "ms": ms, "x40_layers_ms": ms * LAYERS}
                    row["GB_per_s"] = fused_bytes / ms / 1e6
                    row["agrees"] = compare(fn(), ref)["e4m3_max_steps_apart"] <= 1
                except Exception as e:  # noqa: BLE001 - a shape that does not compile must not lose the others
                    row = {"inputs": kind, "variant": name, "error": f"{e.__class__.__name__}: {str(e)[:300]}"}
                res["rows"].append(row)
                print(row, flush=True)
        del qkv, ref, ref_rope
        if cuda:
            torch.cuda.empty_cache()

    note = "" if cuda else " -- INTERPRETER SMOKE RUN, times mean nothing"
    lines = [
        f"fp8 q/k/v preparation, 1 x {S} x {H} x {D} bf16, {where}, {when} (median of {args.reps}){note}",
        f"(the fused path moves {fused_bytes / 1e9:.2f} GB per call: q, k, v read twice in bf16, written once in e4m3)",
        "| inputs | variant | ms | x 40 layers, ms | GB/s (fused) |",
        "|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        if "ms" not in r:
            lines.append(f"| {r['inputs']} | {r['variant']} | {r['error']} | | |")
            continue
        gbs = f"{r['GB_per_s']:.0f}" if "GB_per_s" in r else ""
        lines.append(f"| {r['inputs']} | {r['variant']} | {r['ms']:.2f} | {r['x40_layers_ms']:.0f} | {gbs} |")
    lines.append(f"checks: {json.dumps(res['checks'])}")
    res["table"] = "\n".join(lines)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(res["table"], flush=True)
    return 0


if __name__ == "__main__":
    assert F8 is not None, "this torch has no float8 dtypes"
    raise SystemExit(main())
