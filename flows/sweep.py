"""Sweeps: a grid of settings (sampling options, LoRA strengths) and seeds run as takes of one folder, then one
labelled contact sheet and a table in the Prefect UI.

`sweep_flow` is a Prefect flow whose cells are ordinary `folder_flow` runs in this process: pose, masks and prompt are
cached after the first, the loaded model is kept between cells with the same model options (a new LoRA strength
reloads it with the LoRAs merged at that strength), and each take is cached by its hash, so an interrupted sweep
resumes where it stopped. The sheet (`sweep.mp4` + `sweep.png`, the middle frame) tiles the takes side by side with
their settings written on them; `sweep.json` lists the cells and their takes; the `scailflow-sweep-<folder>` table
artifact has one row per cell. What a sweep may vary, and the grid, are in flows/sweep_options.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from prefect import flow

from scailflow.flows.sweep_options import SWEPT, SweepOptions, cell_model, cells, label, split_cell
from scailflow.scail.options import ModelOptions

SWEEPABLE = SWEPT  # the options a sweep may vary (flows/sweep_options.py)


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


def sweep_run_name() -> str:
    from prefect.runtime import flow_run

    return f"sweep-{(flow_run.parameters or {}).get('folder_name') or 'folder'}"


@flow(name="scailflow-sweep", flow_run_name=sweep_run_name, validate_parameters=False)
def sweep_flow(
    folder: str,
    sweep: SweepOptions | dict,
    folder_name: str = "",
    out: str | None = None,
    defaults: dict | None = None,
    overrides: dict | None = None,
    model: ModelOptions | dict | None = None,
    workers: bool = False,
) -> dict:
    """Run every cell as a take (each a `scailflow-folder` run), then write the sheet and sweep.json and publish the
    cells' table. Cells are ordered so the model loads once per LoRA strength; the pipeline of a strength no longer
    needed is released before the next one loads (a 14B model twice does not fit a GPU). Returns sweep.json's content."""
    from scailflow.files import write_text_atomic
    from scailflow.flows.artifacts import publish_sweep_summary
    from scailflow.flows.folder_flow import folder_flow, prepare
    from scailflow.options import merge
    from scailflow.tasks.common import stage_logger
    from scailflow.tasks.gpu import release_pipelines

    sweep = SweepOptions.model_validate(sweep)
    model = ModelOptions.model_validate(model or {})
    raw, job, out_dir = prepare(folder, out, defaults, overrides)
    values, grid = sweep.values(), cells(sweep.values(), sweep.seed_list())
    models = [cell_model(model, cell) for cell in grid]  # every cell checked before the first runs
    log = stage_logger("flow")
    done, loaded = [], None
    for k, (cell, cell_opts) in enumerate(zip(grid, models), 1):
        sampling, _ = split_cell(cell)
        wanted = cell_opts.for_preset(sampling.get("preset", job.sampling.preset))
        if loaded is not None and wanted != loaded and not workers:
            release_pipelines()  # the next cell loads the model with other LoRA strengths
        loaded = wanted
        summary = folder_flow(
            str(raw.root),
            folder_name=raw.name,
            out=out,
            defaults=defaults,
            overrides=merge(overrides or {}, {"sampling": sampling}),
            model=cell_opts,
            workers=workers,
        )
        state = summary["states"]["generate"]
        text = label(cell, values)
        log.info("sweep %d/%d %s: %s (%s)", k, len(grid), text, Path(summary["take"]).name, state)
        row = {"cell": cell, "label": text, "take": summary["take"], "state": state, "seconds": summary["seconds"]}
        done.append(row)
    video, still = contact_sheet([Path(d["take"]) for d in done], [d["label"] for d in done], Path(out_dir))
    result = {"folder": str(raw.root), "values": values, "seeds": sweep.seed_list(), "cells": done}
    result |= {"sheet": str(video), "still": str(still)}
    write_text_atomic(Path(out_dir) / "sweep.json", json.dumps(result, indent=2))
    publish_sweep_summary(raw.name, sweep_rows(result))
    return result


def sweep_rows(result: dict) -> list[dict]:
    """The sweep's table: one row per cell (its settings, seed, take file, state, seconds)."""
    return [
        {
            "settings": label({k: v for k, v in d["cell"].items() if k != "seed"}, result["values"]) or "-",
            "seed": d["cell"]["seed"],
            "take": Path(d["take"]).name,
            "state": d["state"],
            "seconds": d["seconds"],
        }
        for d in result["cells"]
    ]
