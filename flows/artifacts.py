"""What a person wants to see of a run in the Prefect UI: the output moving, the masks over the driving video moving,
a masks sheet readable at a glance, where the files are (absolute paths), and each stage's state and seconds."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from scailflow.flows.previews import MAX_BYTES, MAX_FRAMES, MAX_SIDE, jpeg_data_uri, webp_data_uri
from scailflow.tasks.progress import artifact_key

log = logging.getLogger("scailflow.flow")
SHEET_MAX_SIDE = 2400


def _link(path: str | Path) -> str:
    p = Path(path).resolve()
    return f"[{p}]({p.as_uri()})"


def _record(summary: dict) -> dict:
    try:
        return json.loads(Path(summary["record"]).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError):
        return {}


def sheet_is_current(sheet: Path, summary: dict) -> bool:
    """Whether the masks preview is newer than every file it draws (and their hand-edited frames): a cached run
    publishes the same picture without drawing it again."""
    if not sheet.is_file():
        return False
    files = summary.get("files", {})
    paths = [Path(p) for v in files.values() for p in (v if isinstance(v, list) else [v]) if p]
    paths.append(Path(summary["folder"]))  # the raw folder: a replaced driving video changes its listing
    paths += [p.with_name(f"{p.stem}_frames") for p in paths]
    try:
        newest = max(p.stat().st_mtime_ns for p in paths if p.exists())
    except ValueError:
        return False
    return sheet.stat().st_mtime_ns >= newest


def _sheet_uri(out_dir: Path, summary: dict | None = None) -> str:
    from scailflow.masks import preview

    path = out_dir / "masks_preview.png"
    if summary is None or not sheet_is_current(path, summary):
        path = preview(out_dir, path, frames=4)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    for quality in (82, 70, 55):
        uri = jpeg_data_uri(sheet, SHEET_MAX_SIDE, quality)
        if len(uri) * 3 // 4 <= 2 * MAX_BYTES:
            break
    return uri


def result_markdown(summary: dict) -> str:
    """The result artifact's markdown (also what `publish_artifacts` stores)."""
    from scailflow.masks.sheet import overlay_frames
    from scailflow.media import read_video

    out_dir = Path(summary["out_dir"])
    record = _record(summary)
    fps = record.get("fps") or 16
    frames = summary["frames"]
    sound = "with the driving video's sound" if record.get("audio_from") else "no sound"
    lines = [
        f"### {Path(summary['folder']).name}: done in {summary['seconds']} s",
        "",
        "| | |",
        "|---|---|",
        f"| output | {_link(summary['video'])} |",
        f"| video | {frames} frames at {fps:g} fps ({frames / fps:.1f} s), {sound} |",
        f"| seed | {summary['seed']} |",
        *(
            [f"| take | `{Path(summary['take']).name}` (every take is kept in `takes/`) |"]
            if summary.get("take")
            else []
        ),
        f"| model | {summary['model']} |",
        f"| settings | {_link(summary['record'])} |",
        f"| all outputs | {_link(out_dir)} |",
        "",
    ]
    pictures = {}
    try:
        video, vfps = read_video(summary["video"])
        pictures["output"] = f"![the output, moving]({webp_data_uri(video, vfps)})"
    except Exception as e:  # noqa: BLE001 - a preview problem must not fail a finished run
        log.warning("no output preview: %s", e)
    driving, mask = summary.get("driving"), (summary.get("files") or {}).get("driving_mask")
    if driving and mask:
        try:
            step = max(1, -(-frames // MAX_FRAMES))  # the frames the animation keeps, read at its size
            overlays, ofps = overlay_frames(driving, mask, step=step, max_side=MAX_SIDE)
            picture = webp_data_uri(overlays, ofps / step)
            pictures["masks over the driving video"] = f"![the masks over the driving video, moving]({picture})"
        except Exception as e:  # noqa: BLE001
            log.warning("no masks-over-video preview: %s", e)
    if pictures:
        lines += [
            "| " + " | ".join(pictures) + " |",
            "|" + "---|" * len(pictures),
            "| " + " | ".join(pictures.values()) + " |",
            "",
        ]
    lines += ["| stage | state | seconds |", "|---|---|---|"]
    for row in stage_rows(summary)[:-1]:
        lines.append(f"| {row['stage']} | {row['state']} | {row['seconds']} |")
    lines += [f"| **total** | | **{summary['seconds']:g}** |", ""]
    try:
        lines += [
            "**Masks over frames** (reference, then frames across the clip; rows: picture, mask, overlay). "
            f"Fix a mask by editing {_link(out_dir / 'ref_mask.png')} or the mask video, then run again.",
            "",
            f"![masks over frames]({_sheet_uri(out_dir, summary)})",
        ]
    except Exception as e:  # noqa: BLE001
        log.warning("no mask sheet: %s", e)
    return "\n".join(lines)


def publish_artifacts(summary: dict) -> None:
    """The result (markdown: previews, absolute paths, stage seconds, masks sheet) and a table of the stages."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    key = artifact_key(summary["folder"])
    try:  # the video is written: a UI problem is a warning, never a failed run
        create_markdown_artifact(result_markdown(summary), key=key, description="scailflow result")
        create_table_artifact(stage_rows(summary), key=f"{key}-stages", description="stage states and seconds")
    except Exception as e:  # noqa: BLE001
        log.warning("could not publish the run's artifacts to the Prefect UI: %s", str(e).splitlines()[0][:200])


def stage_rows(summary: dict) -> list[dict]:
    """One row per stage (state, seconds), generation's wait for its GPU apart, then the folder's total."""
    seconds = summary.get("stage_seconds") or {}
    rows = [{"stage": s, "state": st, "seconds": seconds.get(s, "")} for s, st in summary["states"].items()]
    if summary.get("gpu_wait_s"):
        wait = summary["gpu_wait_s"]
        for row in rows:
            if row["stage"] == "generate" and isinstance(row["seconds"], float):
                row["seconds"] = round(max(row["seconds"] - wait, 0.0), 2)
        rows.append({"stage": "waiting for the GPU", "state": "", "seconds": wait})
    rows.append({"stage": "folder total", "state": summary.get("state", ""), "seconds": summary["seconds"]})
    return rows


def publish_failure(summary: dict) -> None:
    """A failed folder's artifacts: which stage failed and why, and the stage table."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    key = artifact_key(summary["folder"])
    text = (
        f"### {Path(summary['folder']).name}: **Failed** in `{summary['failed_stage']}`\n\n"
        f"{summary['error']}\n\nfolder `{summary['folder']}`, outputs `{summary['out_dir']}`"
    )
    try:
        create_markdown_artifact(text, key=key, description="scailflow: failed")
        create_table_artifact(stage_rows(summary), key=f"{key}-stages", description="stage states and seconds")
    except Exception as e:  # noqa: BLE001
        log.warning("could not publish the run's artifacts to the Prefect UI: %s", str(e).splitlines()[0][:200])


def publish_batch_summary(name: str, rows: list[dict]) -> None:
    """The batch at a glance: folder, state, reason, video, seconds."""
    from prefect.artifacts import create_table_artifact

    key = "scailflow-batch-" + "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    create_table_artifact(rows, key=key[:60], description=f"batch {name}: one row per folder")


def publish_sweep_summary(folder_name: str, rows: list[dict]) -> str:
    """The sweep at a glance: one row per cell (settings, seed, take file, state, seconds). Returns its key. A UI
    problem is a warning: the takes and the sheet are written."""
    from prefect.artifacts import create_table_artifact

    key = "scailflow-sweep-" + "".join(c if c.isalnum() else "-" for c in folder_name.lower()).strip("-")
    key = key[:60].rstrip("-")
    try:
        create_table_artifact(rows, key=key, description=f"sweep of {folder_name}: one row per cell")
    except Exception as e:  # noqa: BLE001
        log.warning("could not publish the sweep's table to the Prefect UI: %s", str(e).splitlines()[0][:200])
    return key
