"""Self-attention alone at the DiT's shape (1 x 48,832 tokens x 40 heads x 128): cuDNN bf16 vs FlashAttention 3 bf16
vs FlashAttention 3 fp8 (the kernel alone, and with the quantisation of scail/fp8_attention.py: its tensor ops eager
and compiled, and the fused Triton kernels of scail/fp8_attention_triton.py), with each output's error against fp32
attention, on Gaussian inputs (what random weights give) and on outlier-heavy q/k (what trained transformers give).
Also checks that the fa3-fwd build is the pinned one and that the real fp8 kernel matches scail/fp8_attention.py's
emulation of it.

    python bench/bench_attention.py --json $OUT/attention.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from scailflow.scail import fa3
from scailflow.scail.fp8_attention import emulate_fa3, quantize_qkv


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def timed(fn, reps=10):
    """Median ms of CUDA-event timed calls after 3 warm-ups."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2]


def make_qkv(kind, S, H, D, seed):
    g = torch.Generator("cuda").manual_seed(seed)
    q, k, v = (torch.randn(1, S, H, D, generator=g, device="cuda") for _ in range(3))
    if kind == "outlier":  # a few shared 10-30x channels in q and k, a per-channel K offset, sharper attention
        ch = torch.randperm(D, generator=g, device="cuda")[:4]
        boost = 10 + 20 * torch.rand(4, generator=g, device="cuda")
        q[..., ch] *= boost
        k[..., ch] *= boost
        k += 2 * torch.randn(1, 1, H, D, generator=g, device="cuda")
        v = v * (0.5 + torch.rand(D, generator=g, device="cuda")) + torch.randn(D, generator=g, device="cuda")
        q *= 3 / (q[:, :2048, :4].transpose(1, 2) @ k[:, :2048, :4].transpose(1, 2).mT / D**0.5).std()
    return [t.bfloat16() for t in (q, k, v)]


def reference(q, k, v):
    """fp32 attention (memory-efficient kernel, fp32 inputs and arithmetic), head by head to bound memory."""
    outs = []
    with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
        for h in range(q.shape[2]):
            qh, kh, vh = (t[:, :, h : h + 1].float().transpose(1, 2) for t in (q, k, v))
            outs.append(F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2))
    return torch.cat(outs, 2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=48832)
    p.add_argument("--heads", type=int, default=40)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    S, H, D = args.tokens, args.heads, 128
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    gpu = torch.cuda.get_device_name()
    t0 = time.perf_counter()
    paths = fa3.verify()
    verify_s = time.perf_counter() - t0
    kernel = fa3.load().flash_attn_func
    print(
        f"# bench_attention {when} on {gpu}, torch {torch.__version__}; fa3-fwd verified in {verify_s:.2f} s: {paths}"
    )
    print("op schema:", torch.ops.fa3_fwd.fwd.default._schema.name, flush=True)
    flop = 4 * S * S * D * H
    res = {"date": when, "gpu": gpu, "torch": torch.__version__, "tokens": S, "heads": H, "rows": [], "checks": {}}

    # the real fp8 kernel against its emulation, on a size the emulation can hold
    qs, ks, vs = make_qkv("outlier", 4096, 8, D, 7)
    q8, k8, v8, dq, dk, dv, vm = quantize_qkv(qs, ks, vs, fused=False)
    real = kernel(q8, k8, v8, q_descale=dq, k_descale=dk, v_descale=dv)
    emu = emulate_fa3(q8, k8, v8, q_descale=dq, k_descale=dk, v_descale=dv)
    res["checks"]["fp8_kernel_vs_emulation_rel"] = rel(real, emu)
    res["checks"]["bf16_kernel_vs_emulation_rel"] = rel(kernel(qs, ks, vs), emulate_fa3(qs, ks, vs))
    print("checks:", res["checks"], flush=True)

    ops = lambda q, k, v: quantize_qkv(q, k, v, fused=False)  # noqa: E731 - the tensor ops
    fused = lambda q, k, v: quantize_qkv(q, k, v, fused=True)  # noqa: E731 - scail/fp8_attention_triton.py
    quant = torch.compile(ops, dynamic=False)
    quant_plain = torch.compile(
        lambda q, k, v: quantize_qkv(q, k, v, rotate=False, center=False, fused=False), dynamic=False
    )

    def fp8_call(qkv, qf):
        q8, k8, v8, dq, dk, dv, vm = qf(*qkv)
        return kernel(q8, k8, v8, q_descale=dq, k_descale=dk, v_descale=dv).float() + vm

    for kind in ("gauss", "outlier"):
        qkv = make_qkv(kind, S, H, D, 1)
        ref = reference(*qkv)
        pre = ops(*qkv)
        variants = {
            "cuDNN bf16 (SDPA)": lambda qkv=qkv: _cudnn(*qkv),
            "FA3 bf16": lambda qkv=qkv: kernel(*qkv),
            "FA3 fp8 kernel alone (pre-quantised)": lambda pre=pre: kernel(
                pre[0], pre[1], pre[2], q_descale=pre[3], k_descale=pre[4], v_descale=pre[5]
            ),
            "FA3 fp8 + quantisation, eager": lambda qkv=qkv: fp8_call(qkv, ops),
            "FA3 fp8 + fused Triton quantisation": lambda qkv=qkv: fp8_call(qkv, fused),
            "FA3 fp8 + quantisation, compiled": lambda qkv=qkv: fp8_call(qkv, quant),
            "FA3 fp8, per-head scales only (no rotation/centring), compiled": lambda qkv=qkv: fp8_call(
                qkv, quant_plain
            ),
            "quantisation alone, compiled": lambda qkv=qkv: quant(*qkv),
            "quantisation alone, fused Triton": lambda qkv=qkv: fused(*qkv),
        }
        for name, fn in variants.items():
            try:
                ms = timed(fn)
                out = fn()
                if name.startswith("quantisation alone"):
                    err = None
                elif "pre-quantised" in name:
                    err = rel(out.float() + pre[6], ref)
                else:
                    err = rel(out, ref)
                row = {"inputs": kind, "variant": name, "ms": ms, "tflops": flop / ms / 1e9, "rel_err_vs_fp32": err}
            except Exception as e:  # noqa: BLE001 - one failing variant must not lose the others
                row = {"inputs": kind, "variant": name, "error": f"{e.__class__.__name__}: {str(e)[:300]}"}
            res["rows"].append(row)
            print(row, flush=True)
        del qkv, ref, pre
        torch.cuda.empty_cache()
    lines = [
        f"Self-attention 1 x {S} x {H} x {D}, {gpu}, {when} (median of 10, CUDA events; error vs fp32 attention)",
        "| inputs | variant | ms | TFLOP/s | rel. error vs fp32 |",
        "|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        if "ms" not in r:
            lines.append(f"| {r['inputs']} | {r['variant']} | {r['error']} | | |")
            continue
        e = "" if r["rel_err_vs_fp32"] is None else f"{r['rel_err_vs_fp32']:.2e}"
        lines.append(f"| {r['inputs']} | {r['variant']} | {r['ms']:.1f} | {r['tflops']:.0f} | {e} |")
    lines.append(f"checks: {json.dumps(res['checks'])}")
    res["table"] = "\n".join(lines)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(res["table"], flush=True)
    return 0


def _cudnn(q, k, v):
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


if __name__ == "__main__":
    raise SystemExit(main())
