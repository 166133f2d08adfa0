"""What the official-command-line tests share (tests/test_official_cli.py: the README's lines;
tests/test_official_flags.py: each official flag): the official example inputs, an environment whose PATH finds this
`scailflow`, the `error:` lines a command printed, and `scailflow generate`'s four input flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "official_preprocess"


def env_with_scailflow(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GEMINI_BASE_URL")}
    return dict(env, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra)


def errors(r: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]


def generate_args(**over) -> list[str]:
    d = DATA / "A"
    args = {
        "--image": d / "ref.png",
        "--mask_image": d / "ref_mask.png",
        "--pose": d / "rendered_v2.mp4",
        "--mask_video": d / "rendered_mask_v2.mp4",
    }
    args.update(over)
    return [str(x) for kv in args.items() for x in kv if x is not None]
