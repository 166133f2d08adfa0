"""Sweeps: a grid of sampling settings (and seeds) run as takes of one folder, then one labelled contact sheet.

Every cell is an ordinary `folder_flow` run in this process: pose, masks and prompt are cached after the first, the
loaded model is kept between cells (same model options), and each take is cached by its hash, so an interrupted sweep
resumes where it stopped. The sheet (`sweep.mp4` + `sweep.png`, the middle frame) tiles the takes side by side with
their settings written on them; `sweep.json` lists the cells and their takes.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np

from scailflow.errors import InputError

SWEEPABLE = ("preset", "steps", "shift", "guidance", "solver", "pose_strength", "pose_start", "pose_end")


def parse_values(key: str, text: str) -> list:
    """`0.6,0.8,1.0` -> [0.6, 0.8, 1.0] (numbers as numbers)."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            raise InputError(f"--{key} {text!r}: an empty value")
        try:
            out.append(int(item) if item.lstrip("-").isdigit() else float(item))
        except ValueError:
            out.append(item)
    return out


def cells(values: dict[str, list], seeds: list[int]) -> list[dict]:
    """The grid, seeds varying fastest: [{"pose_strength": 0.5, "seed": 1}, ...]."""
    keys = list(values)
    return [
        dict(zip(keys, combo)) | {"seed": seed}
        for combo in itertools.product(*(values[k] for k in keys))
        for seed in seeds
    ]


def label(cell: dict) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in cell.items())


def contact_sheet(takes: list[Path], labels: list[str], out_dir: Path) -> tuple[Path, Path]:
    """Tile the takes in a grid (the first take's size per cell, the shortest take's length), labels on top."""
    from PIL import Image, ImageDraw

    from scailflow.media import read_video, write_image, write_video

    videos = [read_video(p) for p in takes]
    fps = videos[0][1]
    n = min(len(v) for v, _ in videos)
    h, w = videos[0][0].shape[1:3]
    cols = math.ceil(math.sqrt(len(videos)))
    rows = math.ceil(len(videos) / cols)
    sheet = np.zeros((n, rows * h, cols * w, 3), np.uint8)
    for i, ((frames, _), text) in enumerate(zip(videos, labels)):
        r, c = divmod(i, cols)
        tile = frames[:n]
        if tile.shape[1:3] != (h, w):
            tile = np.stack([np.asarray(Image.fromarray(f).resize((w, h))) for f in tile])
        band = Image.new("RGB", (w, max(10, h // 8)), (0, 0, 0))
        ImageDraw.Draw(band).text((2, 0), text, fill=(255, 255, 255))
        tile = tile.copy()
        tile[:, : band.height] = np.asarray(band)[None, : min(band.height, h)]
        sheet[:, r * h : (r + 1) * h, c * w : (c + 1) * w] = tile
    # even sizes for H.264's 4:2:0
    sheet = sheet[:, : sheet.shape[1] // 2 * 2, : sheet.shape[2] // 2 * 2]
    video = write_video(out_dir / "sweep.mp4", sheet, fps)
    still = write_image(out_dir / "sweep.png", sheet[n // 2])
    return Path(video), Path(still)


def run_sweep(folder: str, values: dict[str, list], seeds: list[int], overrides: dict, model, out=None, say=print):
    """Run every cell as a take, then write the sheet. Returns sweep.json's content."""
    from scailflow.files import write_text_atomic
    from scailflow.flows.folder_flow import folder_flow, prepare
    from scailflow.options import merge

    raw, _, out_dir = prepare(folder, out, None, overrides)
    grid = cells(values, seeds)
    done = []
    for k, cell in enumerate(grid, 1):
        summary = folder_flow(
            str(raw.root), folder_name=raw.name, out=out, overrides=merge(overrides, {"sampling": cell}), model=model
        )
        state = summary["states"]["generate"]
        say(f"sweep {k}/{len(grid)} {label(cell)}: {Path(summary['take']).name} ({state})")
        done.append({"cell": cell, "label": label(cell), "take": summary["take"], "state": state})
    video, still = contact_sheet([Path(d["take"]) for d in done], [d["label"] for d in done], Path(out_dir))
    result = {"folder": str(raw.root), "values": values, "seeds": seeds, "cells": done, "sheet": str(video)}
    result["still"] = str(still)
    write_text_atomic(Path(out_dir) / "sweep.json", json.dumps(result, indent=2))
    return result
