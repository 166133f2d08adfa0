"""SCAIL-2 14B DiT forward benchmark on one GPU: speed-up variants against the plain eager path, in one process.

Builds the full 14B config with random weights (normal, std 0.02; fp32 where the checkpoint loader keeps fp32) directly
on the GPU, random inputs of the real shapes, then for each variant: seconds per forward (median of CUDA-event timed
forwards after a warm-up), TFLOP/s against the FLOP count of shared/spec/performance.md, peak GPU memory, speed ratio
against the eager reference (bf16 autocast, torch SDPA, no compile) measured in the same run, and the relative error
of the prediction against that reference. Also the bf16 matmul ceiling (8192^3) measured in the same run.

    python bench/bench_dit.py --size 896x512 --variants eager,flash,cudnn,cudnn+compile,cfg2,fp8,fp8+compile \
        --json $OUT/dit.json
    python bench/bench_dit.py --size 896x512 --variants eager,cudnn,offload --json $OUT/dit.json
    python bench/bench_dit.py --tiny ...   (CPU smoke test of the script itself, tiny config)

Variant names: `+`-joined parts of: eager|sdpa|flash|cudnn|flash3|sage (attention), compile, fp8, qkv (fused
projections), cfg2 (batch of 2 in one forward, time reported per sample), offload (diffusers block-level group
offload with stream prefetch, scail/offload.py's `block` mode). Variants that change the modules (fp8, offload)
are run after the others.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import time
import traceback
from pathlib import Path

import torch

from scailflow.scail import speed  # noqa: E402
from scailflow.scail.checkpoint import FP32_PATTERNS  # noqa: E402
from scailflow.scail.model import OFFICIAL_14B_CONFIG, SCAIL2RotaryPosEmbed, SCAIL2Transformer, tiny_config  # noqa: E402
from scailflow.scail.options import ATTENTION_CHOICES  # noqa: E402

SIZES = {"896x512": (896, 512), "704x1280": (704, 1280)}
GiB = 2**30


def flops_per_forward(tokens: int, cfg: dict) -> float:
    """performance.md's count: linear work of the blocks + self-attention (QK^T and PV), per sample."""
    dim, ffn, layers = cfg["dim"], cfg["ffn_dim"], cfg["num_layers"]
    macs_per_token = 4 * dim * dim + 2 * dim * dim + 2 * dim * ffn
    return layers * macs_per_token * tokens * 2 + layers * 4 * tokens * tokens * dim


def build_model(cfg: dict, device: str, seed: int = 0) -> SCAIL2Transformer:
    """Random full-size model built in place on the device: bf16, fp32 for the checkpoint loader's fp32 patterns."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            model = SCAIL2Transformer(**SCAIL2Transformer.config_from_official(cfg))
    finally:
        torch.set_default_dtype(old)
    model = model.to_empty(device=device)
    model.rope = SCAIL2RotaryPosEmbed(model.config.attention_head_dim, model.rope.max_positions).to(device)
    gen = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(pat in name for pat in FP32_PATTERNS):
                p.data = p.data.float()
            if p.ndim == 1 and name.endswith("weight"):  # norm gains
                p.data.normal_(0, 0.02, generator=gen).add_(1.0)
            else:
                p.data.normal_(0, 0.02, generator=gen)
    return model.eval()


def make_inputs(h: int, w: int, frames: int, device: str, batch: int = 1, text_dim: int = 4096, seed: int = 1):
    gen = torch.Generator(device).manual_seed(seed)
    T, lh, lw = (frames - 1) // 4 + 1, h // 8, w // 8
    r = lambda *s: torch.randn(*s, generator=gen, device=device)  # noqa: E731
    u = lambda *s: torch.rand(*s, generator=gen, device=device)  # noqa: E731
    one = dict(
        x=r(1, 16, T, lh, lw),
        t=torch.tensor([500.0], device=device),
        context=r(1, 512, text_dim),
        clip_fea=r(1, 257, 1280),
        ref_latents=r(1, 16, 1, lh, lw),
        ref_masks=u(1, 28, 1, lh, lw),
        pose_latents=r(1, 16, T, lh // 2, lw // 2),
        driving_masks=u(1, 28, T, lh // 2, lw // 2),
    )
    if batch == 1:
        return one
    out = {k: torch.cat([v] * batch) for k, v in one.items()}
    out["context"] = torch.cat([one["context"], r(1, 512, text_dim)])  # the unconditional text differs
    return out


def token_count(model, inputs) -> int:
    with torch.no_grad():
        tokens, _ = model.embed_tokens(
            inputs["x"][:1],
            inputs["ref_latents"][:1],
            inputs["ref_masks"][:1],
            inputs["pose_latents"][:1],
            inputs["driving_masks"][:1],
        )
    return tokens.shape[1]


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_forwards(model, inputs, device: str, warmup: int, repeats: int):
    """Returns (times in s, last output)."""
    times, out = [], None
    for i in range(warmup + repeats):
        if device.startswith("cuda"):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            out = model(**inputs)
        if device.startswith("cuda"):
            b.record()
            torch.cuda.synchronize()
            dt = a.elapsed_time(b) / 1000
        else:
            dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
        print(f"    forward {i + 1}/{warmup + repeats}: {dt:.3f} s{' (warm-up)' if i < warmup else ''}", flush=True)
    return times, out


def matmul_ceiling(device: str, n: int = 8192, reps: int = 20) -> float:
    if not device.startswith("cuda"):
        return float("nan")
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        a @ b
        e1.record()
        torch.cuda.synchronize()
        ts.append(e0.elapsed_time(e1) / 1000)
    return 2 * n**3 / statistics.median(ts) / 1e12


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.float(), ref.float()
    return float((out - ref).norm() / ref.norm())


def psnr_latent(out: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR of the prediction against the reference over the reference's peak-to-peak range (dB)."""
    out, ref = out.float(), ref.float()
    mse = float(((out - ref) ** 2).mean())
    rng = float(ref.max() - ref.min())
    return 10 * math.log10(rng**2 / max(mse, 1e-30))


def uncompile(model):
    for m in model.modules():
        if m.__class__.__name__ in (model._repeated_blocks or []):
            m._compiled_call_impl = None


def run_variant(name: str, model, inputs1, inputs2, device: str, args, state: dict) -> dict:
    parts = set(name.split("+"))
    attention = next((p for p in parts if p in ("eager", *ATTENTION_CHOICES)), "sdpa")
    attention = "sdpa" if attention == "eager" else attention
    rec: dict = {"variant": name, "attention": attention}
    t_setup = time.perf_counter()
    speed.set_attention(model, attention)
    if "qkv" in parts and not state.get("qkv"):
        speed.fuse_qkv(model)
        state["qkv"] = True
    if "fp8" in parts and not state.get("fp8"):
        rec["fp8_linears"] = speed.fp8_blocks(model)
        state["fp8"] = True
    if "offload" in parts and not state.get("offload"):
        from scailflow.scail.offload import Placement

        uncompile(model)
        model.to("cpu")
        torch.cuda.empty_cache()
        Placement(device, "block", args.vram_budget_gb).prepare({"transformer": model})
        state["offload"] = True
    uncompile(model)
    if "compile" in parts:
        speed.compile_blocks(model)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    batch = 2 if "cfg2" in parts else 1
    inputs = inputs2 if batch == 2 else inputs1
    warmup = args.warmup + (1 if "compile" in parts else 0)
    repeats = args.repeats_offload if "offload" in parts else args.repeats
    try:
        times, out = timed_forwards(model, inputs, device, warmup, repeats)
    except Exception as e:  # noqa: BLE001 - fullgraph compile refused: retry with graph breaks allowed
        if "compile" not in parts:
            raise
        print(
            f"    fullgraph compile failed ({e.__class__.__name__}: {str(e)[:200]}); retrying fullgraph=False",
            flush=True,
        )
        rec["fullgraph"] = False
        uncompile(model)
        speed.compile_blocks(model, fullgraph=False)
        times, out = timed_forwards(model, inputs, device, warmup, repeats)
    rec["setup_s"] = round(time.perf_counter() - t_setup - sum(times), 1)
    med = statistics.median(times)
    rec.update(
        batch=batch,
        times_s=[round(t, 4) for t in times],
        s_per_forward=med / batch,
        peak_gib=(torch.cuda.max_memory_allocated() / GiB if device.startswith("cuda") else float("nan")),
    )
    rec["finite"] = bool(torch.isfinite(out).all())
    out1 = out[:1] if batch == 2 else out
    if "ref" in state:
        rec["rel_err"] = rel_err(out1, state["ref"])
        rec["psnr_db"] = psnr_latent(out1, state["ref"])
    else:
        state["ref"] = out1.detach().clone()
        rec["rel_err"] = 0.0
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="896x512", choices=sorted(SIZES))
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--variants", default="eager,flash,cudnn,cudnn+compile,cfg2+cudnn,fp8+cudnn,fp8+cudnn+compile")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--repeats-offload", type=int, default=2)
    p.add_argument("--vram-budget-gb", type=float, default=None)
    p.add_argument("--budget-s", type=float, default=1e9, help="skip the remaining variants past this wall time")
    p.add_argument("--json", default=None)
    p.add_argument("--tiny", action="store_true", help="tiny config on the CPU (checks the script, not the speed)")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    cfg = tiny_config(text_dim=4096) if args.tiny else dict(OFFICIAL_14B_CONFIG)
    h, w = SIZES[args.size]
    if args.tiny:
        h, w, args.frames = 64, 64, 9
    gpu = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# bench_dit {when} on {gpu}, torch {torch.__version__}", flush=True)
    ceiling = matmul_ceiling(device)
    print(f"bf16 matmul 8192^3: {ceiling:.0f} TFLOP/s", flush=True)
    t0 = time.perf_counter()
    model = build_model(cfg, device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"built model: {n_params / 1e9:.2f}e9 params in {time.perf_counter() - t0:.1f} s", flush=True)
    inputs1 = make_inputs(h, w, args.frames, device, 1, cfg["text_dim"])
    inputs2 = make_inputs(h, w, args.frames, device, 2, cfg["text_dim"])
    tokens = token_count(model, inputs1)
    flop = flops_per_forward(tokens, cfg)
    print(f"{args.size}x{args.frames}: {tokens} tokens, {flop:.3g} FLOP per forward", flush=True)
    result = {
        "date": when,
        "gpu": gpu,
        "torch": torch.__version__,
        "size": args.size,
        "frames": args.frames,
        "tokens": tokens,
        "flop_per_forward": flop,
        "matmul_ceiling_tflops": ceiling,
        "params": n_params,
        "variants": [],
    }
    order = [v.strip() for v in args.variants.split(",") if v.strip()]
    destructive = [v for v in order if {"fp8", "offload", "qkv"} & set(v.split("+"))]
    order = [v for v in order if v not in destructive] + destructive
    state: dict = {}
    for name in order:
        if time.perf_counter() - t_start > args.budget_s:
            print(f"  {name}: skipped (time budget)", flush=True)
            result["variants"].append({"variant": name, "skipped": "time budget"})
            continue
        print(f"  {name} ...", flush=True)
        try:
            if "offload" in name.split("+") and not state.get("offload") and (state.get("fp8") or state.get("qkv")):
                # offload is measured on the plain bf16 model: rebuild it (same seed, same weights)
                del model
                state.pop("fp8", None), state.pop("qkv", None)
                import gc

                gc.collect()
                torch.cuda.empty_cache()
                model = build_model(cfg, device)
            rec = run_variant(name, model, inputs1, inputs2, device, args, state)
        except Exception as e:  # noqa: BLE001 - one failing variant must not lose the others
            traceback.print_exc()
            rec = {"variant": name, "error": f"{e.__class__.__name__}: {str(e)[:300]}"}
            if device == "cuda":
                torch.cuda.empty_cache()
        result["variants"].append(rec)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
    base = next((r for r in result["variants"] if r.get("variant") in ("eager", "sdpa") and "s_per_forward" in r), None)
    lines = [
        f"SCAIL-2 14B DiT forward, {args.size}x{args.frames} ({tokens} tokens, {flop / 1e15:.2f} PFLOP), "
        f"{gpu}, {when}; bf16 matmul ceiling {ceiling:.0f} TFLOP/s",
        "| variant | s/forward | TFLOP/s | % ceiling | peak GiB | x eager | rel. err vs eager | PSNR dB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["variants"]:
        if "s_per_forward" not in r:
            lines.append(f"| {r['variant']} | {r.get('error') or r.get('skipped')} | | | | | | |")
            continue
        tf = flop / r["s_per_forward"] / 1e12
        r["tflops"] = tf
        r["x_eager"] = base["s_per_forward"] / r["s_per_forward"] if base else float("nan")
        psnr = r.get("psnr_db")
        lines.append(
            f"| {r['variant']}{'' if r['finite'] else ' (NON-FINITE)'} | {r['s_per_forward']:.3f} | "
            f"{tf:.0f} | {100 * tf / ceiling:.0f}% | {r['peak_gib']:.1f} | {r['x_eager']:.2f} | "
            f"{r.get('rel_err', float('nan')):.2e} | {'' if psnr is None else f'{psnr:.1f}'} |"
        )
    table = "\n".join(lines)
    result["table"] = table
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(table, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
