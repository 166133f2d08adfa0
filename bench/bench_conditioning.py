"""Benchmark of the conditioning path (scail/conditioning.py) on the CPU: what one 81-frame segment costs before the
GPU sees it, with the official resize (torchvision bicubic, antialiased, the driving video resized as uint8) against
the plain float `F.interpolate` (no antialias) it replaced.

Inputs: an 81-frame driving video and its mask at --src (default 1920x1080), a --photo reference (default 4000x3000),
the target --target (default 896x512, W x H). Times are the best of --repeat runs. Prints a table and writes JSON.

    .venv/bin/python bench/bench_conditioning.py --json out/bench_conditioning.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scailflow.scail.conditioning import frames_to_model, half_size, masks_to_28ch, still_to_model


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def plain_float_resize(frames: np.ndarray, h: int, w: int) -> torch.Tensor:
    """The replaced path: scale to [-1, 1] first, then float bicubic without antialias (16 frames at a time)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    scale = max(h / x.shape[2], w / x.shape[3])
    size = (max(h, round(x.shape[2] * scale)), max(w, round(x.shape[3] * scale)))
    out = [F.interpolate(x[i : i + 16], size=size, mode="bicubic", align_corners=False) for i in range(0, len(x), 16)]
    return torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--src", default="1920x1080", help="driving video size, WxH")
    p.add_argument("--photo", default="4000x3000", help="reference photo size, WxH")
    p.add_argument("--target", default="896x512", help="generated size, WxH")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    sw, sh = map(int, a.src.split("x"))
    pw, ph = map(int, a.photo.split("x"))
    tw, th = map(int, a.target.split("x"))
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (a.frames, sh, sw, 3), dtype=np.uint8)
    mask = np.zeros_like(video)
    mask[:, sh // 4 : 3 * sh // 4, sw // 3 : 2 * sw // 3] = (0, 0, 255)
    photo = rng.integers(0, 256, (ph, pw, 3), dtype=np.uint8)

    rows = [
        ("driving video, official (uint8 resize, then scale)", best(lambda: frames_to_model(video, th, tw), a.repeat)),
        (
            "driving video, replaced (scale, float resize, no AA)",
            best(lambda: plain_float_resize(video, th, tw), a.repeat),
        ),
        (
            "driving mask -> 0.5x -> 28 channels",
            best(lambda: masks_to_28ch(frames_to_model(mask, th, tw), half=True), a.repeat),
        ),
        ("driving video 0.5x", best(lambda: half_size(frames_to_model(video, th, tw)), a.repeat)),
        ("reference photo (float resize)", best(lambda: still_to_model(photo, th, tw), a.repeat)),
    ]
    threads = torch.get_num_threads()
    print(f"{a.frames} frames {a.src} -> {a.target}, photo {a.photo}, CPU, {threads} threads, best of {a.repeat}")
    print(f"| {'step':55s} | seconds | ms / frame |")
    print(f"|{'-' * 57}|---------|------------|")
    for name, sec in rows:
        per = sec / (1 if name.startswith("reference") else a.frames) * 1000
        print(f"| {name:55s} | {sec:7.3f} | {per:10.2f} |")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "frames": a.frames,
            "src": a.src,
            "photo": a.photo,
            "target": a.target,
            "threads": threads,
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "seconds": dict(rows),
        }
        a.json.write_text(json.dumps(doc, indent=2))
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
