"""Quality cost of step caching (First Block Cache) and of fp8 weights, on decoded frames; CPU, tiny random model.

Runs the whole tiny-random pipeline (T5, CLIP, VAE encode, the DiT loop, VAE decode) on the same random inputs and
seed: uncached fp32 as the reference, then FBC at several thresholds and fp8 linears. For each: PSNR and SSIM of the
decoded frames against the reference, the fraction of DiT steps whose tail blocks were skipped, and wall time.
The model is untrained, so these numbers show the mechanism and its bookkeeping (how many steps are skipped for a
given threshold, how far the frames move); the trained 14B model's residuals behave differently (step caching on
Wan 14B: MagCache ~3x at PSNR ~23.7 dB, shared/spec/performance.md), so thresholds must be re-chosen on it.

    python bench/bench_cache.py [--steps 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scailflow.scail.loading import load_pipeline  # noqa: E402
from scailflow.scail.options import ModelOptions, SamplingOptions  # noqa: E402
from scailflow.scail.pipeline import Conditioning  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, win: int = 7) -> float:
    """Mean SSIM over frames and channels (uniform win x win window, 8-bit constants)."""
    x = torch.from_numpy(a).double().permute(0, 3, 1, 2).reshape(-1, 1, *a.shape[1:3])
    y = torch.from_numpy(b).double().permute(0, 3, 1, 2).reshape(-1, 1, *b.shape[1:3])
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu = lambda t: F.avg_pool2d(t, win, 1)  # noqa: E731
    mx, my = mu(x), mu(y)
    vx, vy, cxy = mu(x * x) - mx**2, mu(y * y) - my**2, mu(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def make_conditioning(h: int, w: int, frames: int, seed: int = 0) -> Conditioning:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    ref = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 128)], -1).astype(np.uint8)
    ref = np.clip(ref.astype(int) + rng.integers(-20, 20, ref.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w, 3), np.uint8)
    mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
    driving = np.stack([np.roll(ref, 2 * i, axis=1) for i in range(frames)])
    dmask = np.stack([np.roll(mask, 2 * i, axis=1) for i in range(frames)])
    return Conditioning(ref, mask, driving, dmask, "a person dancing in a studio")


def run(pipe, cond, opts, h, w):
    blocks = pipe.transformer.blocks
    counter = {"tail": 0, "head": 0}
    hooks = [
        blocks[0].attn1.register_forward_pre_hook(lambda *_: counter.__setitem__("head", counter["head"] + 1)),
        blocks[-1].attn1.register_forward_pre_hook(lambda *_: counter.__setitem__("tail", counter["tail"] + 1)),
    ]
    t0 = time.perf_counter()
    try:
        frames, _ = pipe(cond, h, w, opts)
    finally:
        for hk in hooks:
            hk.remove()
    return frames, counter, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--size", default="64x96", help="HxW")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--thresholds", default="0.02,0.05,0.1,0.2")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    h, w = (int(v) for v in args.size.split("x"))
    cond = make_conditioning(h, w, args.frames)
    opts = lambda: SamplingOptions(steps=args.steps, shift=3.0, guidance=args.guidance, seed=7)  # noqa: E731
    rows = []

    pipe = load_pipeline(ModelOptions(model="tiny-random", device="cpu"))
    ref, cnt, dt = run(pipe, cond, opts(), h, w)
    rows.append(dict(variant="uncached fp32", skipped=0.0, psnr=float("inf"), ssim=1.0, seconds=dt, **cnt))
    for th in [float(v) for v in args.thresholds.split(",") if v]:
        pipe = load_pipeline(ModelOptions(model="tiny-random", device="cpu", step_cache=th))
        out, cnt, dt = run(pipe, cond, opts(), h, w)
        rows.append(
            dict(
                variant=f"FBC threshold {th:g}",
                skipped=1 - cnt["tail"] / max(cnt["head"], 1),
                psnr=psnr(out, ref),
                ssim=ssim(out, ref),
                seconds=dt,
                **cnt,
            )
        )
    pipe = load_pipeline(ModelOptions(model="tiny-random", device="cpu", fp8=True))
    out, cnt, dt = run(pipe, cond, opts(), h, w)
    rows.append(
        dict(
            variant="fp8 linears (e4m3 rowwise)",
            skipped=0.0,
            psnr=psnr(out, ref),
            ssim=ssim(out, ref),
            seconds=dt,
            **cnt,
        )
    )

    lines = [
        f"Decoded-frame quality vs uncached fp32, tiny random SCAIL-2 on CPU, {args.size} x {args.frames} frames, "
        f"{args.steps} steps, CFG {args.guidance:g}",
        "| variant | DiT calls (block 0 / last block) | steps skipped | PSNR dB | SSIM | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['head']} / {r['tail']} | {100 * r['skipped']:.0f}% | {r['psnr']:.1f} | "
            f"{r['ssim']:.4f} | {r['seconds']:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
