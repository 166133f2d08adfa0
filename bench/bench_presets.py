"""Seconds per clip of the presets on one GPU, end to end (T5, CLIP, VAE encode, DiT loop, VAE decode).

Builds the whole pipeline at full size with random weights directly on the GPU (DiT 14B bf16 as bench_dit builds
it, UMT5-XXL encoder bf16, CLIP ViT-H/14 bf16, Wan 2.1 VAE fp32, a word-level tokenizer standing in for umt5's), random
conditioning pixels of 81 frames at 896x512, then runs the `fast` preset (8 steps, shift 1, no CFG) end to end for
each speed-up setting, timing every stage. The `quality` preset (40 steps, CFG 5 = 80 forwards) is too long for one
device call here; its seconds per clip are ESTIMATED from the same run: the measured non-DiT stages + 80 x the
measured seconds per DiT forward inside the loop (scheduler included). Quality cost: decoded-frame PSNR/SSIM of each
setting against the first (eager bf16) run, same seed and inputs (random weights: this measures numerical drift,
not perceptual quality).

    python bench/bench_presets.py --settings eager,compile,fp8+compile --json $OUT/presets.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cache import psnr, ssim  # noqa: E402
from bench_dit import build_model, make_inputs  # noqa: E402

from scailflow.scail import speed  # noqa: E402
from scailflow.scail.model import OFFICIAL_14B_CONFIG, tiny_config  # noqa: E402
from scailflow.scail.offload import Placement  # noqa: E402
from scailflow.scail.options import PRESETS, SamplingOptions  # noqa: E402
from scailflow.scail.pipeline import Conditioning, SCAIL2Pipeline  # noqa: E402

STAGES = ("encode_prompt", "encode_reference", "encode_driving", "denoise", "decode")


def build_pipeline(device: str, tiny: bool) -> SCAIL2Pipeline:
    from diffusers import AutoencoderKLWan
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    from scailflow.scail.tiny import tiny_tokenizer

    cfg = tiny_config(text_dim=4096) if tiny else dict(OFFICIAL_14B_CONFIG)
    transformer = build_model(cfg, device)
    tok = tiny_tokenizer()
    t5_cfg = (
        UMT5Config(vocab_size=len(tok), d_model=4096, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
        if tiny
        else UMT5Config(
            vocab_size=256384,
            d_model=4096,
            d_kv=64,
            d_ff=10240,
            num_layers=24,
            num_heads=64,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
            feed_forward_proj="gated-gelu",
            layer_norm_epsilon=1e-6,
        )
    )
    clip_cfg = (
        CLIPVisionConfig(
            hidden_size=1280,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,
            patch_size=14,
            hidden_act="gelu",
        )
        if tiny
        else CLIPVisionConfig(
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
        )
    )
    dt = torch.bfloat16  # the DiT is built in bf16 (bench_dit.build_model); autocast bf16 as the pipeline runs on GPUs
    old = torch.get_default_dtype()
    torch.set_default_dtype(dt)
    try:
        with torch.device(device):
            text_encoder = UMT5EncoderModel(t5_cfg).eval()
            image_encoder = CLIPVisionModel(clip_cfg).eval()
    finally:
        torch.set_default_dtype(old)
    with torch.device(device):
        vae = (
            AutoencoderKLWan(
                base_dim=8,
                z_dim=16,
                dim_mult=[1, 2, 4, 4],
                num_res_blocks=2,
                attn_scales=[],
                temperal_downsample=[False, True, True],
            )
            if tiny
            else AutoencoderKLWan()
        ).eval()
    return SCAIL2Pipeline(
        transformer, vae, text_encoder, tok, image_encoder, Placement(device), dt, label="random full-size"
    )


def conditioning(h: int, w: int, frames: int) -> Conditioning:
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w, 3), np.uint8)
    mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
    driving = rng.integers(0, 255, (frames, h, w, 3), dtype=np.uint8)
    dmask = np.repeat(mask[None], frames, 0)
    return Conditioning(ref, mask, driving, dmask, "a person dancing in a studio")


def timed_stages(pipe: SCAIL2Pipeline, sync) -> dict:
    """Wrap the pipeline's stage methods on this instance; returns the dict they add seconds to."""
    acc = {s: 0.0 for s in STAGES}
    for name in STAGES:
        fn = getattr(pipe, name)

        def wrapped(*a, _fn=fn, _name=name, **k):
            sync()
            t0 = time.perf_counter()
            out = _fn(*a, **k)
            sync()
            acc[_name] += time.perf_counter() - t0
            return out

        setattr(pipe, name, wrapped)
    return acc


def vae_tiling_bench(sizes: list[tuple[int, int]], frames: int, device: str) -> str:
    """Wan VAE decode (full size, random weights, fp32 as loaded) with and without tiling: seconds, peak, PSNR."""
    from diffusers import AutoencoderKLWan

    from scailflow.scail.encoders import vae_decode

    with torch.device(device):
        vae = AutoencoderKLWan().eval()
    lines = ["| size | tiling | decode s | peak GiB | PSNR vs untiled dB |", "|---|---|---|---|---|"]
    for h, w in sizes:
        z = torch.randn(1, 16, (frames - 1) // 4 + 1, h // 8, w // 8, generator=torch.Generator().manual_seed(0))
        ref = None
        for tiled in (False, True):
            vae.use_tiling = False
            if tiled:
                vae.enable_tiling()
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            try:
                with torch.no_grad():
                    out = vae_decode(vae, z.to(device)).cpu()
            except torch.OutOfMemoryError:
                lines.append(f"| {w}x{h} | {'on' if tiled else 'off'} | out of memory | | |")
                continue
            dt = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
            frames8 = ((out[0].permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
            q = "" if ref is None else f"{psnr(frames8, ref):.1f}"
            ref = frames8 if ref is None else ref
            lines.append(f"| {w}x{h} | {'on' if tiled else 'off'} | {dt:.1f} | {peak:.1f} | {q} |")
            print(lines[-1], flush=True)
    del vae
    if device == "cuda":
        torch.cuda.empty_cache()
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default="eager,compile,fp8+compile")
    p.add_argument("--size", default="896x512", help="HxW")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--budget-s", type=float, default=1e9)
    p.add_argument("--json", default=None)
    p.add_argument("--tiny", action="store_true")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="fast",
        help="the preset each setting runs end to end (quality: 80 forwards, ~7 min on one H100)",
    )
    p.add_argument(
        "--vae-tiling", action="store_true", help="only the VAE decode with/without tiling (896x512, 704x1280)"
    )
    args = p.parse_args(argv)
    if args.vae_tiling:
        dev = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
        sizes = [(64, 64)] if args.tiny else [(896, 512), (704, 1280)]
        table = vae_tiling_bench(sizes, 9 if args.tiny else args.frames, dev)
        print(table)
        if args.json:
            Path(args.json).write_text(json.dumps({"vae_tiling": table}, indent=1))
        return 0
    t_start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    h, w = (int(v) for v in args.size.split("x"))
    if args.tiny:
        h, w, args.frames = 64, 64, 9
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    pipe = build_pipeline(device, args.tiny)
    print(f"# bench_presets {when} on {gpu}; pipeline built in {time.perf_counter() - t0:.1f} s", flush=True)
    cond = conditioning(h, w, args.frames)
    fast = PRESETS["fast"]
    quality = PRESETS["quality"]
    rows, ref_frames = [], None
    state: dict = {}
    for setting in [s for s in args.settings.split(",") if s]:
        if time.perf_counter() - t_start > args.budget_s:
            rows.append({"setting": setting, "skipped": "time budget"})
            continue
        parts = set(setting.split("+"))
        tr = pipe.transformer
        for m in tr.modules():  # undo an earlier setting's compile
            if m.__class__.__name__ in tr._repeated_blocks:
                m._compiled_call_impl = None
        speed.set_attention(tr, "auto" if device == "cuda" else "sdpa")
        if "fp8" in parts and not state.get("fp8"):
            speed.fp8_blocks(tr)
            state["fp8"] = True
        warm = 0.0
        if "compile" in parts:
            speed.compile_blocks(tr)
        t0 = time.perf_counter()
        if not state.get("warm"):  # first setting: one throw-away 1-step clip (cuDNN plans, allocator, encoders)
            with torch.no_grad():
                pipe(cond, h, w, SamplingOptions(**dict(fast, steps=1), seed=3))
            state["warm"] = True
        elif parts & {"compile", "fp8"}:  # later settings: one throw-away DiT forward (compile) of the same shapes
            inp = make_inputs(h, w, args.frames, device, 1, pipe.transformer.config.text_dim)
            with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
                tr(**inp)
            sync()
        warm = time.perf_counter() - t0
        acc = timed_stages(pipe, sync)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        run_preset = PRESETS[args.preset]
        opts = SamplingOptions(**run_preset, seed=7)
        t0 = time.perf_counter()
        frames, _ = pipe(cond, h, w, opts)
        total = time.perf_counter() - t0
        for name in STAGES:  # restore the class methods
            delattr(pipe, name)
        per_forward = acc["denoise"] / (run_preset["steps"] * (2 if run_preset["guidance"] > 1 else 1))
        other = total - acc["denoise"]
        row = {
            "setting": setting,
            "preset": args.preset,
            "fast_s": total,
            "warmup_s": warm,
            "stages_s": acc,
            "s_per_step": per_forward,
            "quality_est_s": other + 2 * quality["steps"] * per_forward,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan"),
        }
        if ref_frames is None:
            ref_frames = frames
            row.update(psnr=float("inf"), ssim=1.0)
        else:
            row.update(psnr=psnr(frames, ref_frames), ssim=ssim(frames, ref_frames))
        rows.append(row)
        print(
            f"  {setting}: {args.preset} preset {total:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in acc.items())}); "
            f"warm-up {warm:.1f} s",
            flush=True,
        )
        if args.json:
            Path(args.json).write_text(json.dumps({"date": when, "gpu": gpu, "rows": rows}, indent=1))
    measured = {"fast": "fast: 8 steps, no CFG", "quality": "quality: 40 steps, CFG 5"}[args.preset]
    lines = [
        f"Seconds per clip, {args.frames} frames {w}x{h}, {gpu}, {when} (random full-size weights; "
        "quality = ESTIMATE: measured non-DiT stages + 80 x measured s/forward)",
        f"| setting | {measured} (measured) | of which DiT | VAE decode | encoders + VAE encode | "
        "quality: 40 steps CFG 5 (estimate) | one-time warm-up | peak GiB | PSNR / SSIM vs eager |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "fast_s" not in r:
            lines.append(f"| {r['setting']} | skipped | | | | | | | |")
            continue
        s = r["stages_s"]
        enc = s["encode_prompt"] + s["encode_reference"] + s["encode_driving"]
        lines.append(
            f"| {r['setting']} | {r['fast_s']:.1f} s | {s['denoise']:.1f} s | {s['decode']:.1f} s | "
            f"{enc:.1f} s | {r['quality_est_s']:.0f} s | {r['warmup_s']:.0f} s | {r['peak_gib']:.1f} | "
            f"{r['psnr']:.1f} dB / {r['ssim']:.4f} |"
        )
    table = "\n".join(lines)
    print(table, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"date": when, "gpu": gpu, "rows": rows, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
