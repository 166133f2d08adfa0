"""Seconds per clip of the presets on one GPU, measured end to end (T5, CLIP, VAE encode, DiT loop, VAE decode).

Builds the whole pipeline at full size with random weights directly on the GPU (DiT 14B bf16 as bench_dit builds
it, UMT5-XXL encoder bf16, CLIP ViT-H/14 bf16, Wan 2.1 VAE fp32, a word-level tokenizer standing in for umt5's), random
conditioning pixels of 81 frames at 896x512, then runs each `setting:preset` pair end to end, timing every stage
(`fast`: 8 steps, no CFG; `quality`: 40 steps with CFG 5 = 80 forwards). Quality cost: decoded-frame PSNR/SSIM of
each run against the first run of the same preset, same seed and inputs (random weights: this measures numerical
drift, not perceptual quality).

Setting names: `+`-joined parts of: compile, fp8 (fp8 linears), cudnn|flash3|sdpa|auto (attention; none named:
cuDNN), fp8attn (fp8 self-attention in FlashAttention 3), fp8attn0 (the same without the Hadamard rotation); `eager`
names none of them. `--offload block --vram-budget-gb 24 --cap-gib 24` places the models as `generate --offload
block --vram_budget_gb 24` does and caps PyTorch's allocator at 24 GiB (a 24 GB card, simulated).

    python bench/bench_presets.py --runs eager:fast,fp8+fp8attn+compile:fast,fp8+fp8attn+compile:quality --json x.json
    python bench/bench_presets.py --runs fp8+fp8attn+compile:fast,fp8+fp8attn+compile:quality \
        --offload block --vram-budget-gb 24 --cap-gib 24

`balanced` (40 steps, CFG 5 over the first 80% of the steps, EasyCache) is compared with the `quality` run of the
same seed when one ran before it. Random weights make EasyCache's own skip decisions meaningless, so
`--force_skip_ratio R` makes the cache skip R of each branch's steps in a fixed pattern (the hook still measures
what it measures), which gives the time at a published skip ratio: EasyCache's authors report 2.2x on
Wan2.1-I2V-14B 720p (arXiv 2507.02860; 2.4x T2V-14B, EasyCache4Wan2.1 README), i.e. ~1 - 1/2.2 = 0.55 of the
forwards skipped; TeaCache on LightX2V's fp8 build, I2V-14B 480p: 191 -> 107 s = 1.79x, ~0.44 skipped.

    python bench/bench_presets.py --runs fp8+fp8attn+compile:quality,fp8+fp8attn+compile:balanced \
        --force_skip_ratio 0.55 --json balanced.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cache import psnr, ssim  # noqa: E402
from bench_dit import build_model, make_inputs  # noqa: E402

from scailflow.scail import attention as attn  # noqa: E402
from scailflow.scail import speed, step_cache  # noqa: E402
from scailflow.scail.fp8_attention import emulate_fa3  # noqa: E402
from scailflow.scail.model import OFFICIAL_14B_CONFIG, tiny_config  # noqa: E402
from scailflow.scail.offload import Placement  # noqa: E402
from scailflow.scail.options import (  # noqa: E402
    OFFLOAD_MODES,
    PRESET_STEP_CACHE,
    PRESETS,
    SamplingOptions,
    StepCacheSpec,
    parse_step_cache,
)
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


def parse_runs(args) -> list[tuple[str, str]]:
    if args.runs:
        runs = []
        for item in args.runs.split(","):
            setting, preset, *cap = item.strip().split(":") + [""]
            runs.append((setting, preset or args.preset, bool(cap and cap[0] == "cap")))
        return runs
    return [(st, args.preset, False) for st in args.settings.split(",") if st]


def place_capped(pipe, device: str, args) -> str:
    """Move the built pipeline to the --offload placement and cap the allocator at --cap-gib (a smaller card)."""
    import gc

    tr = pipe.transformer
    for m in tr.modules():
        if m.__class__.__name__ in tr._repeated_blocks:
            m._compiled_call_impl = None
    # on the H200 (2026-12-01) a switch after compiled uncapped runs found 23.7 GiB still allocated and ran out of
    # memory: drop dynamo's compiled code and what it holds before re-placing (not re-measured since)
    torch._dynamo.reset()
    gc.collect()
    placement = Placement(device, args.offload, args.vram_budget_gb)
    if args.offload != "none":
        placement.prepare(
            {"transformer": tr, "vae": pipe.vae, "text_encoder": pipe.text_encoder, "image_encoder": pipe.image_encoder}
        )
        pipe.placement = placement
    cap = f"offload {args.offload}"
    if device == "cuda":
        torch.cuda.empty_cache()
        if args.cap_gib:
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(args.cap_gib * 2**30 / total)
            cap += f", memory capped at {args.cap_gib:g} GiB (set_per_process_memory_fraction)"
    print(f"  placed: {cap}", flush=True)
    return cap


def setting_attention(parts: set, device: str) -> tuple[str, bool]:
    """(attention backend, fp8 attention) a setting names; none named: cuDNN on a GPU (the eager reference)."""
    if {"fp8attn", "fp8attn0"} & parts:
        return "flash3", True
    named = [a for a in ("flash3", "cudnn", "sdpa", "auto") if a in parts]
    return (named[0] if named else ("cudnn" if device == "cuda" else "sdpa")), False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default="eager,compile,fp8+compile")
    p.add_argument(
        "--runs",
        default=None,
        help="setting:preset pairs run in this order (e.g. eager:fast,fp8+fp8attn+compile:quality); "
        "overrides --settings/--preset",
    )
    p.add_argument("--size", default="896x512", help="HxW")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--budget-s", type=float, default=1e9)
    p.add_argument("--json", default=None)
    p.add_argument("--tiny", action="store_true")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="fast",
        help="the preset each setting runs end to end (quality: 80 forwards, ~5.5 min on one H200)",
    )
    p.add_argument("--offload", choices=OFFLOAD_MODES, default="none", help="placement, as --offload of generate")
    p.add_argument("--vram-budget-gb", type=float, default=None, help="as --vram_budget_gb of generate")
    p.add_argument(
        "--cap-gib",
        type=float,
        default=None,
        help="simulate a smaller card: torch.cuda.set_per_process_memory_fraction to this many GiB after the build",
    )
    p.add_argument(
        "--force_skip_ratio",
        "--force-skip-ratio",
        type=float,
        default=None,
        help="cached presets (balanced): skip this fraction of each branch's steps in a fixed pattern (random "
        "weights cannot show the real decisions; 0.55 = EasyCache's published 2.2x on Wan2.1-I2V-14B)",
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
    runs = parse_runs(args)
    t0 = time.perf_counter()
    pipe = build_pipeline(device, args.tiny)
    tr = pipe.transformer
    state: dict = {}
    capped = {"all": all(c for _, _, c in runs)}
    if any("fp8" in st.split("+") for st, _, _ in runs) and args.offload != "none" and capped["all"]:
        speed.fp8_blocks(tr)  # as load_pipeline does: fp8 before the offload hooks
        state["fp8"] = True
    cap = place_capped(pipe, device, args) if capped["all"] else "offload none"
    print(f"# bench_presets {when} on {gpu}; pipeline built in {time.perf_counter() - t0:.1f} s; {cap}", flush=True)
    cond = conditioning(h, w, args.frames)
    fast = PRESETS["fast"]
    rows, ref_frames = [], {}
    last_setting = None
    for setting, preset, capped_run in runs:
        if time.perf_counter() - t_start > args.budget_s:
            rows.append({"setting": setting, "preset": preset, "capped": capped_run, "skipped": "time budget"})
            print(f"  {setting} {preset}: skipped (time budget)", flush=True)
            continue
        parts = set(setting.split("+"))
        t0 = time.perf_counter()
        try:
            if capped_run and not capped.get("done") and not capped["all"]:
                if "fp8" in parts and not state.get("fp8"):
                    speed.fp8_blocks(tr)
                    state["fp8"] = True
                cap_note = place_capped(pipe, device, args)
                capped["done"] = True
                last_setting = None
            if setting != last_setting:
                for m in tr.modules():  # undo an earlier setting's compile
                    if m.__class__.__name__ in tr._repeated_blocks:
                        m._compiled_call_impl = None
                attention, fp8_attn = setting_attention(parts, device)
                attn.STATE.rotate = "fp8attn0" not in parts
                kernel = emulate_fa3 if attention == "flash3" and device == "cpu" else None
                attn.set_attention(tr, attention, device, fp8=fp8_attn, kernel=kernel)
                if "fp8" in parts and not state.get("fp8"):
                    speed.fp8_blocks(tr)
                    state["fp8"] = True
                if "compile" in parts:
                    grouped = capped_run and args.offload == "block"
                    speed.compile_blocks(tr, fullgraph=not grouped)
                if not state.get("warm"):  # first run: one throw-away 1-step clip (cuDNN plans, allocator, encoders)
                    with torch.no_grad():
                        pipe(cond, h, w, SamplingOptions(**dict(fast, steps=1), seed=3))
                    state["warm"] = True
                else:  # a new setting: one throw-away DiT forward of the same shapes (compile)
                    inp = make_inputs(h, w, args.frames, device, 1, tr.config.text_dim)
                    # a step cache left on by the previous preset needs a cache context, as every pipeline call has
                    with (
                        torch.no_grad(),
                        torch.autocast(device, dtype=torch.bfloat16),
                        step_cache.context(tr, "warmup"),
                    ):
                        tr(**inp)
                    del inp
                    sync()
            last_setting = setting
            warm = time.perf_counter() - t0
            acc = timed_stages(pipe, sync)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            run_preset = PRESETS[preset]
            opts = SamplingOptions(**run_preset, preset=preset, seed=7)
            cache = parse_step_cache(PRESET_STEP_CACHE.get(preset))
            if cache is not None and args.force_skip_ratio is not None:
                cache = StepCacheSpec(cache.kind, cache.threshold, force_skip_ratio=args.force_skip_ratio)
            step_cache.set_default(tr, cache, explicit=True)
            t0 = time.perf_counter()
            try:
                frames, record = pipe(cond, h, w, opts)
            finally:
                for name in STAGES:  # restore the class methods
                    delattr(pipe, name)
            total = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - one failing run must not lose the others
            traceback.print_exc()
            rows.append({"setting": setting, "preset": preset, "error": f"{e.__class__.__name__}: {str(e)[:300]}"})
            last_setting = None
            if device == "cuda":
                torch.cuda.empty_cache()
            continue
        counted = record["step_cache"]
        forwards = counted["computed"]
        row = {
            "setting": setting,
            "preset": preset,
            "capped": capped_run,
            "clip_s": total,
            "warmup_s": warm,
            "stages_s": acc,
            "forwards": forwards,  # transformer forwards computed (a cache's skips not counted)
            "forwards_called": counted["forwards"],
            "step_cache": counted["kind"],
            "force_skip_ratio": args.force_skip_ratio if cache is not None else None,
            "s_per_forward": acc["denoise"] / max(forwards, 1),
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan"),
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if device == "cuda" else float("nan"),
        }
        if capped_run and not capped["all"]:
            row["placement"] = cap_note
        ref_key = "quality" if preset == "balanced" and "quality" in ref_frames else preset
        if ref_key not in ref_frames:
            ref_frames[preset] = (setting, frames)
            row.update(psnr=float("inf"), ssim=1.0, vs=setting)
        else:
            row.update(psnr=psnr(frames, ref_frames[ref_key][1]), ssim=ssim(frames, ref_frames[ref_key][1]))
            row["vs"] = f"{ref_frames[ref_key][0]}:{ref_key}"
        rows.append(row)
        print(
            f"  {setting} {preset}: {total:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in acc.items())}); "
            f"warm-up {warm:.1f} s; peak {row['peak_gib']:.1f} GiB; forwards {forwards}/{counted['forwards']} "
            f"computed ({counted['kind']}{'' if cache is None else f', forced {args.force_skip_ratio}'})",
            flush=True,
        )
        if args.json:
            Path(args.json).write_text(json.dumps({"date": when, "gpu": gpu, "rows": rows}, indent=1))
    lines = [
        f"Seconds per clip, measured end to end, {args.frames} frames {w}x{h}, {gpu}, {when} (random full-size "
        f"weights; T5, CLIP, VAE encode, DiT loop, VAE decode; {cap}; capped runs: offload {args.offload}, "
        f"cap {args.cap_gib} GiB)",
        "| setting | preset | s per clip | of which DiT | forwards computed / called | s / forward | VAE decode | "
        "encoders + VAE encode | one-time warm-up | peak GiB (allocated / reserved) | PSNR / SSIM vs first run of the "
        "preset (balanced: vs quality) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "clip_s" not in r:
            lines.append(f"| {r['setting']} | {r['preset']} | {r.get('error') or r.get('skipped')} | | | | | | | | |")
            continue
        st = r["stages_s"]
        enc = st["encode_prompt"] + st["encode_reference"] + st["encode_driving"]
        q = (
            "reference"
            if r["psnr"] == float("inf") and r["vs"] == r["setting"]
            else f"{r['psnr']:.1f} dB / {r['ssim']:.4f}"
        )
        name = r["setting"] + (" (capped)" if r["capped"] else "")
        fw = f"{r['forwards']} / {r['forwards_called']}" + (
            f" (forced skip {r['force_skip_ratio']})" if r.get("force_skip_ratio") is not None else ""
        )
        lines.append(
            f"| {name} | {r['preset']} | {r['clip_s']:.1f} s | {st['denoise']:.1f} s | {fw} | "
            f"{r['s_per_forward']:.2f} s | {st['decode']:.1f} s | {enc:.1f} s | {r['warmup_s']:.0f} s | "
            f"{r['peak_gib']:.1f} / {r['peak_reserved_gib']:.1f} | {q} |"
        )
    table = "\n".join(lines)
    print(table, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"date": when, "gpu": gpu, "rows": rows, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
