"""Benchmark of the pose stage: frames per second of the capsule render and of the whole pose-mode stage.

Defaults: 81 frames at 896x512 (W x H), CPU. The render is timed on a synthetic walking skeleton about 3.2 m
from the camera (it fills most of the frame height); the whole stage runs `prepare_driving(driving="pose")`
with the embedded mediapipe model on the scikit-image astronaut moving across the frame. Prints a table and
writes JSON to --json.

    .venv/bin/python bench/bench_pose.py --json out/bench_pose.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from scailflow.media import write_video  # noqa: E402
from scailflow.pose import PoseWeights, prepare_driving  # noqa: E402
from scailflow.pose.render2d import composite, draw_person_overlay  # noqa: E402
from scailflow.pose.render3d import Renderer, build_capsules  # noqa: E402
from scailflow.pose.runtime import torch_device  # noqa: E402
from scailflow.pose.skeleton import PersonPose  # noqa: E402


def walking_joints(n_frames: int, z: float = 3200.0) -> np.ndarray:
    """[1, T, 18, 3] mm: a person facing the camera, swinging arms and legs, drifting sideways."""
    out = np.zeros((1, n_frames, 18, 3), np.float32)
    for t in range(n_frames):
        ph = 2 * np.pi * t / 24
        sw = 0.5 * np.sin(ph)
        x0 = 300 * np.sin(2 * np.pi * t / n_frames)
        j = {0: (0, -780, 0), 1: (0, -560, 0), 2: (-190, -540, 0), 5: (190, -540, 0), 8: (-100, 0, 0), 11: (100, 0, 0)}
        j[3] = (-215, -540 + 290 * np.cos(sw), 290 * np.sin(sw))
        j[4] = (-225, j[3][1] + 260 * np.cos(sw + 0.4), j[3][2] + 260 * np.sin(sw + 0.4))
        j[6] = (215, -540 + 290 * np.cos(-sw), 290 * np.sin(-sw))
        j[7] = (225, j[6][1] + 260 * np.cos(-sw + 0.4), j[6][2] + 260 * np.sin(-sw + 0.4))
        j[9] = (-110, 420 * np.cos(-sw), 420 * np.sin(-sw))
        j[10] = (-110, j[9][1] + 420 * np.cos(-sw - 0.3), j[9][2] + 420 * np.sin(-sw - 0.3))
        j[12] = (110, 420 * np.cos(sw), 420 * np.sin(sw))
        j[13] = (110, j[12][1] + 420 * np.cos(sw - 0.3), j[12][2] + 420 * np.sin(sw - 0.3))
        for k, (x, y, dz) in j.items():
            out[0, t, k] = (x + x0, y + 150, z + dz)
    return out


def astronaut_clip(n_frames: int, height: int, width: int) -> np.ndarray:
    """The scikit-image astronaut (a real photo) sliding across a black canvas of the benchmark size."""
    import cv2
    from skimage import data

    side = min(height, width)
    img = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    frames = np.zeros((n_frames, height, width, 3), np.uint8)
    travel = max(width - side, 0)
    for t in range(n_frames):
        x = int(round(travel * t / max(n_frames - 1, 1)))
        frames[t, :, x : x + side] = img[:, : min(side, width - x)]
    return frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--width", type=int, default=896)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (torch render device)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--render-only", action="store_true", help="skip the whole-stage run (needs mediapipe)")
    args = ap.parse_args(argv)
    n, h, w = args.frames, args.height, args.width
    dev = torch_device(args.device)
    rows = []

    caps = build_capsules(walking_joints(n))
    renderer = Renderer(h, w, device=dev)
    list(renderer.render(build_capsules(walking_joints(2))))  # warm-up
    t0 = time.perf_counter()
    frames3d = [rgb for rgb, _ in renderer.render(caps)]
    dt = time.perf_counter() - t0
    lit = float(np.mean([(f.max(-1) > 0).mean() for f in frames3d]))
    rows.append(("render3d: capsules, ray march + shading", n, dt, f"{lit:.1%} of pixels lit"))

    person = PersonPose(body=np.full((18, 2), -1.0, np.float32), body_score=np.zeros(18, np.float32))
    person.hands[:] = np.random.default_rng(0).uniform(0.3, 0.7, person.hands.shape)
    person.face[:] = np.random.default_rng(1).uniform(0.3, 0.5, person.face.shape)
    t0 = time.perf_counter()
    for f in frames3d:
        composite(f, [draw_person_overlay(person, h, w)])
    dt = time.perf_counter() - t0
    rows.append(("render2d: face/hand overlay + composite", n, dt, "68 face + 2x21 hand points"))

    with tempfile.TemporaryDirectory() as tmp:
        if args.render_only:
            src = None
        else:
            src = write_video(Path(tmp) / "drive.mp4", astronaut_clip(n, h, w), 16)
        if src is not None:
            t0 = time.perf_counter()
            res = prepare_driving(src, Path(tmp) / "out", driving="pose", weights=PoseWeights(), device=args.device)
            dt = time.perf_counter() - t0
            rows.append((f"stage: prepare_driving(pose), {res.backend}", n, dt, "incl. decode, encode x2"))
            for k, v in res.timings.items():
                if v >= 1e-3:  # the mediapipe backend lifts 3D inside pose2d: no separate pose3d time
                    rows.append((f"  stage part: {k}", n, v, ""))

    print(
        f"pose benchmark: {n} frames {w}x{h}, device {dev}, torch threads {torch.get_num_threads()}, "
        f"{platform.processor() or platform.machine()}"
    )
    print(f"{'what':<46} {'frames':>6} {'seconds':>8} {'fps':>8}  note")
    for name, frames, secs, note in rows:
        print(f"{name:<46} {frames:>6} {secs:>8.2f} {frames / secs if secs else float('inf'):>8.2f}  {note}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "frames": n,
                    "width": w,
                    "height": h,
                    "device": str(dev),
                    "torch_threads": torch.get_num_threads(),
                    "rows": [
                        {
                            "what": r[0].strip(),
                            "frames": r[1],
                            "seconds": r[2],
                            "fps": r[1] / r[2] if r[2] else None,
                            "note": r[3],
                        }
                        for r in rows
                    ],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
