"""Colour drift across the segments of a long clip, before and after matching to the first segment (scail/color.py).

The clip is real pixels (scikit-image's astronaut, swaying as in the demo) cut the way a long SCAIL-2 run is:
81-frame segments with a 76-frame stride. Each later segment is given the drift users report on long Wan/SCAIL-2
videos (a growing warm cast and darkening: the same per-segment gain, not a per-frame one); the undrifted clip is
the ground truth. For each method: per segment, the Delta E (CIE76) of its mean Lab colour against the first
segment's, before and after matching, the PSNR of the matched frames against the undrifted ones, and the seconds
per segment.

    python bench/bench_color.py [--segments 4] [--size 256] [--json bench/results/color.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

from scailflow.flows.demo import astronaut, sway_frames
from scailflow.scail.color import ColorMatcher, lab_drift, mean_lab

SEGMENT, STRIDE = 81, 76


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1.0 / float(np.mean((a - b) ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--json", default="bench/results/color.json")
    args = ap.parse_args()

    total = SEGMENT + STRIDE * (args.segments - 1)
    clip = sway_frames(astronaut(args.size), total).astype(np.float32) / 255  # as the pipeline hands them over
    clean = [clip[k * STRIDE : k * STRIDE + SEGMENT] for k in range(args.segments)]
    drifted = []
    for k, seg in enumerate(clean):
        gain = np.array([1 + 0.06 * k, 1.0, 1 - 0.08 * k]) * (1 - 0.05 * k)
        drifted.append(np.clip(seg * gain + 0.015 * k, 0, 1))
    ref_mean = mean_lab(drifted[0])

    rows = []
    for method in ("reinhard", "histogram"):
        matcher = ColorMatcher(method)
        matcher.set_reference(drifted[0])
        for k in range(1, args.segments):
            t0 = time.perf_counter()
            out, stats = matcher.match(drifted[k])
            secs = time.perf_counter() - t0
            rows.append(
                {
                    "method": method,
                    "segment": k + 1,
                    "drift_before": stats["lab_drift_before"],
                    "drift_after": stats["lab_drift_after"],
                    "drift_clean": round(lab_drift(clean[k], ref_mean), 3),
                    "psnr_before": round(psnr(drifted[k], clean[k]), 2),
                    "psnr_after": round(psnr(out, clean[k]), 2),
                    "seconds": round(secs, 2),
                }
            )

    print(f"{args.segments} segments of {SEGMENT} frames at {args.size}x{args.size}, stride {STRIDE}")
    print(
        "| method | segment | mean Lab drift before | after | undrifted clip's own | PSNR before | after | s / segment |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['segment']} | {r['drift_before']} | {r['drift_after']} | {r['drift_clean']} | "
            f"{r['psnr_before']} dB | {r['psnr_after']} dB | {r['seconds']} |"
        )
    meta = {"date": str(date.today()), "machine": platform.processor() or platform.machine(), "size": args.size}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
