"""What seeing a run costs: the result artifact's previews, carrying the sound, and progress reporting per step.

On a clip of the real output shape (81 frames, 512x896 W x H, 16 fps; the scikit-image astronaut swaying, so the
pictures compress like a real video, not like noise) with a 5 s AAC tone as the driving video's sound. Prints a
table and writes JSON to --json.

    .venv/bin/python bench/bench_ui.py --json bench/results/bench_ui.json
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import re
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from scailflow.flows.artifacts import result_markdown
from scailflow.flows.demo import astronaut, sway_frames
from scailflow.masks.render import write_label_video
from scailflow.media import read_video, write_image, write_video
from scailflow.progress import Terminal
from scailflow.tasks.progress import FolderProgress


def clip(frames: int, height: int, width: int) -> np.ndarray:
    still = astronaut(min(height, width))
    moving = sway_frames(still, frames)
    canvas = np.zeros((frames, height, width, 3), np.uint8)
    top = (height - moving.shape[1]) // 2
    canvas[:, top : top + moving.shape[1], : moving.shape[2]] = moving
    return canvas


def with_tone(path: Path, frames: np.ndarray, fps: int, seconds: float, rate: int = 48000) -> None:
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.height, v.width = frames.shape[1:3]
        v.pix_fmt = "yuv420p"
        a = c.add_stream("aac", rate=rate, layout="stereo")
        for f in frames:
            for p in v.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        n = int(seconds * rate)
        wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
        for s in range(0, n, 1024):
            fr = av.AudioFrame.from_ndarray(np.stack([wave[s : s + 1024]] * 2), format="fltp", layout="stereo")
            fr.sample_rate, fr.pts = rate, s
            for p in a.encode(fr):
                c.mux(p)
        for p in a.encode():
            c.mux(p)


def timed(fn, repeats: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--height", type=int, default=896)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--profile", action="store_true", help="print where the result artifact's time goes")
    args = ap.parse_args(argv)
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        frames = clip(args.frames, args.height, args.width)
        with_tone(d / "driving.mp4", frames, 16, seconds=5.0)
        write_image(d / "ref.png", frames[0])
        labels = np.stack([(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) > 20).astype(np.uint8) for f in frames])
        write_label_video(d / "rendered_mask_v2.mp4", labels, [(0, 0, 255)], (0, 0, 0), 16)
        write_image(
            d / "ref_mask.png", np.where(labels[0][..., None] > 0, [0, 0, 255], [255, 255, 255]).astype(np.uint8)
        )

        silent, _ = timed(lambda: write_video(d / "silent.mp4", frames, 16), repeats=5)
        sound, _ = timed(lambda: write_video(d / "output.mp4", frames, 16, audio_from=d / "driving.mp4"), repeats=5)
        rows.append(("write output.mp4, silent", silent, f"{(d / 'silent.mp4').stat().st_size / 1e6:.2f} MB"))
        rows.append(("write output.mp4 with the driving sound", sound, "5 s of AAC stereo 48 kHz"))
        # the sound alone: one frame shown for 5 s carries 5 s of sound
        one, _ = timed(lambda: write_video(d / "one.mp4", frames[:1], 0.2), repeats=5)
        one_sound, _ = timed(
            lambda: write_video(d / "one.mp4", frames[:1], 0.2, audio_from=d / "driving.mp4"), repeats=5
        )
        rows.append(("  of which the sound (decode, trim, AAC encode, mux)", one_sound - one, ""))

        record = {"fps": 16, "audio_from": str(d / "driving.mp4")}
        (d / "output.mp4.json").write_text(json.dumps(record))
        summary = {
            "folder": str(d),
            "driving": str(d / "driving.mp4"),
            "out_dir": str(d),
            "states": dict.fromkeys(("pose", "masks", "prompt", "generate"), "Completed"),
            "stage_seconds": {"pose": 0.1, "masks": 1.0, "prompt": 0.1, "generate": 400.0},
            "files": {"driving_mask": str(d / "rendered_mask_v2.mp4")},
            "video": str(d / "output.mp4"),
            "record": str(d / "output.mp4.json"),
            "seed": 1,
            "frames": args.frames,
            "model": "bench",
            "seconds": 401.2,
        }
        if args.profile:
            import cProfile
            import pstats

            cProfile.runctx("result_markdown(summary)", globals(), {"summary": summary}, str(d / "prof"))
            pstats.Stats(str(d / "prof")).sort_stats("cumtime").print_stats(25)
        seconds, md = timed(lambda: result_markdown(summary), repeats=2)
        pictures = re.findall(r"\(data:image/(\w+);base64,([A-Za-z0-9+/=]+)\)", md)
        sizes = [f"{kind} {len(base64.b64decode(b)) / 1e3:.0f} KB" for kind, b in pictures]
        rows.append(("result artifact (2 animations + masks sheet)", seconds, ", ".join(sizes)))
        read_s, _ = timed(lambda: read_video(d / "output.mp4"))
        rows.append(("  of which reading output.mp4", read_s, ""))

        terminal, folder = Terminal(), FolderProgress("bench")  # plain lines, no server: the in-process cost
        n = 2000
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            terminal.update("generate", "denoise segment 1/1", i, n)
            folder.update("generate", "denoise segment 1/1", i, n)
        per_step = (time.perf_counter() - t0) / n
        rows.append(("progress report per step (terminal + artifact bookkeeping)", per_step, "no server call"))

    print("| what | seconds | notes |\n|---|---|---|")
    for name, secs, note in rows:
        print(f"| {name} | {secs:.4g} | {note} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": platform.platform(),
                    "python": platform.python_version(),
                    "date": time.strftime("%Y-%m-%d"),
                    "clip": {"frames": args.frames, "height": args.height, "width": args.width},
                    "rows": [{"what": a, "seconds": b, "notes": c} for a, b, c in rows],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
