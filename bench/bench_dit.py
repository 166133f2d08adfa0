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

    python bench/bench_dit.py --size 896x512,704x1280 --repeats 2,1 \
        --variants eager,cudnn+compile,flash3+compile,fp8+cudnn+compile,fp8+flash3+compile,fp8+flash3+fp8attn+compile

Variant names: `+`-joined parts of: eager|sdpa|flash|cudnn|flash3|sage (attention), fp8attn (fp8 self-attention in
FlashAttention 3, scail/fp8_attention.py's recipe) or fp8attn0 (the same without the Hadamard rotation), compile,
fp8 (fp8 linears), qkv (fused projections), cfg2 (batch of 2 in one forward, time reported per sample), offload
(diffusers block-level group offload with stream prefetch, scail/offload.py's `block` mode). Several sizes run in
one process on one model, one table each; variants that change the modules (fp8, offload) run after the others.
On the CPU (`--tiny`) FlashAttention 3 runs as scail/fp8_attention.py's emulation of its arithmetic.
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

from scailflow.scail import attention as attn  # noqa: E402
from scailflow.scail import speed  # noqa: E402
from scailflow.scail.checkpoint import FP32_PATTERNS  # noqa: E402
from scailflow.scail.fp8_attention import emulate_fa3  # noqa: E402
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


def run_variant(name: str, model, inputs1, inputs2, device: str, args, state: dict, ref: dict, repeats: int) -> dict:
    parts = set(name.split("+"))
    attention = next((p for p in parts if p in ("eager", *ATTENTION_CHOICES)), "sdpa")
    attention = "sdpa" if attention == "eager" else attention
    fp8_attention = bool(parts & {"fp8attn", "fp8attn0"})
    rec: dict = {"variant": name, "attention": attention}
    t_setup = time.perf_counter()
    attn.STATE.rotate = "fp8attn0" not in parts  # fp8attn0: per-head scales and K/V means, no Hadamard rotation
    kernel = emulate_fa3 if attention == "flash3" and device == "cpu" else None
    rec["attention"], rec["fp8_attention"] = attn.set_attention(model, attention, fp8=fp8_attention, kernel=kernel)
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
    warmup = args.warmup + (1 if "compile" in parts and args.compile_extra_warmup else 0)
    repeats = args.repeats_offload if "offload" in parts else repeats
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
    if "ref" in ref:
        rec["rel_err"] = rel_err(out1, ref["ref"])
        rec["psnr_db"] = psnr_latent(out1, ref["ref"])
    else:
        ref["ref"] = out1.detach().clone()
        rec["rel_err"] = 0.0
    return rec


def size_table(res: dict, ceiling: float) -> str:
    flop, tokens = res["flop_per_forward"], res["tokens"]
    base = next((r for r in res["variants"] if r.get("variant") in ("eager", "sdpa") and "s_per_forward" in r), None)
    lines = [
        f"SCAIL-2 14B DiT forward, {res['size']}x{res['frames']} ({tokens} tokens, {flop / 1e15:.2f} PFLOP), "
        f"{res['gpu']}, {res['date']}; bf16 matmul ceiling {ceiling:.0f} TFLOP/s",
        "| variant | s/forward | TFLOP/s | % ceiling | peak GiB | x eager | rel. err vs eager | PSNR dB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["variants"]:
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
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="896x512", help="one or more of 896x512, 704x1280, comma-separated")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--variants", default="eager,flash,cudnn,cudnn+compile,cfg2+cudnn,fp8+cudnn,fp8+cudnn+compile")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--compile-extra-warmup", type=int, default=1, help="one more warm-up forward for compiled variants")
    p.add_argument("--repeats", default="3", help="timed forwards per variant, one number per size (comma-separated)")
    p.add_argument("--repeats-offload", type=int, default=2)
    p.add_argument("--vram-budget-gb", type=float, default=None)
    p.add_argument("--budget-s", type=float, default=1e9, help="skip the remaining variants past this wall time")
    p.add_argument("--first-size-only", default="", help="variants run at the first size only, after all others")
    p.add_argument("--json", default=None)
    p.add_argument("--tiny", action="store_true", help="tiny config on the CPU (checks the script, not the speed)")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    cfg = tiny_config(text_dim=4096) if args.tiny else dict(OFFICIAL_14B_CONFIG)
    sizes = [s.strip() for s in args.size.split(",") if s.strip()]
    for s in sizes:
        if s not in SIZES:
            p.error(f"--size: {s} is not one of {', '.join(SIZES)}")
    reps = [int(r) for r in str(args.repeats).split(",")]
    reps += [reps[-1]] * (len(sizes) - len(reps))
    gpu = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# bench_dit {when} on {gpu}, torch {torch.__version__}", flush=True)
    ceiling = matmul_ceiling(device)
    print(f"bf16 matmul 8192^3: {ceiling:.0f} TFLOP/s", flush=True)
    t0 = time.perf_counter()
    model = build_model(cfg, device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"built model: {n_params / 1e9:.2f}e9 params in {time.perf_counter() - t0:.1f} s", flush=True)
    per_size: dict = {}
    for size in sizes:
        h, w = (64, 64) if args.tiny else SIZES[size]
        frames = 9 if args.tiny else args.frames
        inputs1 = make_inputs(h, w, frames, device, 1, cfg["text_dim"])
        inputs2 = make_inputs(h, w, frames, device, 2, cfg["text_dim"])
        tokens = token_count(model, inputs1)
        flop = flops_per_forward(tokens, cfg)
        print(f"{size}x{frames}: {tokens} tokens, {flop:.3g} FLOP per forward", flush=True)
        res = {"date": when, "gpu": gpu, "torch": torch.__version__, "size": size, "frames": frames, "tokens": tokens}
        res.update(flop_per_forward=flop, matmul_ceiling_tflops=ceiling, params=n_params, variants=[])
        per_size[size] = {"inputs": (inputs1, inputs2), "res": res, "ref": {}}
    result = {"date": when, "gpu": gpu, "torch": torch.__version__, "sizes": [per_size[s]["res"] for s in sizes]}
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    last = [v.strip() for v in args.first_size_only.split(",") if v.strip()]
    destructive = [v for v in variants if {"fp8", "offload", "qkv"} & set(v.split("+"))]
    keep = [v for v in variants if v not in destructive]
    # every size's non-destructive variants first, then the ones that change the modules (same model, no rebuild)
    order = [(s, v) for s in sizes for v in keep] + [(s, v) for s in sizes for v in destructive]
    order += [(sizes[0], v) for v in last]
    state: dict = {}
    for size, name in order:
        ps = per_size[size]
        if time.perf_counter() - t_start > args.budget_s:
            print(f"  {size} {name}: skipped (time budget)", flush=True)
            ps["res"]["variants"].append({"variant": name, "skipped": "time budget"})
            continue
        print(f"  {size} {name} ...", flush=True)
        try:
            if "offload" in name.split("+") and not state.get("offload") and (state.get("fp8") or state.get("qkv")):
                # offload is measured on the plain bf16 model: rebuild it (same seed, same weights)
                del model
                state.pop("fp8", None), state.pop("qkv", None)
                import gc

                gc.collect()
                torch.cuda.empty_cache()
                model = build_model(cfg, device)
            reps_here = reps[sizes.index(size)]
            rec = run_variant(name, model, *ps["inputs"], device, args, state, ps["ref"], reps_here)
        except Exception as e:  # noqa: BLE001 - one failing variant must not lose the others
            traceback.print_exc()
            rec = {"variant": name, "error": f"{e.__class__.__name__}: {str(e)[:300]}"}
            if device == "cuda":
                torch.cuda.empty_cache()
        ps["res"]["variants"].append(rec)
        print(f"    -> {json.dumps({k: v for k, v in rec.items() if k != 'times_s'})}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
    tables = []
    for size in sizes:
        res = per_size[size]["res"]
        res["table"] = size_table(res, ceiling)
        tables.append(res["table"])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print("\n\n".join(tables), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
