"""What a person wants to see of a run in the Prefect UI: masks over frames, the first output frame, timings, seed."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger("scailflow.flow")
MAX_THUMB = 640


def data_uri(rgb: np.ndarray, max_side: int = MAX_THUMB) -> str:
    """A small inline JPEG (the UI renders markdown images; local files are not reachable from a browser)."""
    im = Image.fromarray(rgb)
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def artifact_key(folder: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes."""
    stem = "".join(c if c.isalnum() else "-" for c in Path(folder).name.lower()).strip("-") or "folder"
    return f"scailflow-{stem}"[:60]


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


def publish_artifacts(summary: dict) -> None:
    """Contact sheet of reference/mask/driving frames, the output's first frame, and a table of the run."""
    from prefect.artifacts import create_markdown_artifact

    from scailflow.masks import preview
    from scailflow.media import read_video

    key = artifact_key(summary["folder"])
    out_dir = Path(summary["out_dir"])
    parts = [
        f"### {Path(summary['folder']).name}",
        f"`{summary['video']}`  \nseed **{summary['seed']}**, {summary['frames']} frames, model: {summary['model']}",
    ]
    try:
        sheet = out_dir / "masks_preview.png"
        if not sheet_is_current(sheet, summary):
            sheet = preview(out_dir, sheet)
        parts.append(f"![masks over frames]({data_uri(np.asarray(Image.open(sheet).convert('RGB')))})")
    except Exception as e:  # noqa: BLE001 - a preview problem must not fail a finished run
        log.warning("no mask preview: %s", e)
    try:
        first, _ = read_video(summary["video"], max_frames=1)
        parts.append(f"![first output frame]({data_uri(first[0])})")
    except Exception as e:  # noqa: BLE001
        log.warning("no output thumbnail: %s", e)
    if summary.get("take"):
        parts.append(f"take `{Path(summary['take']).name}` (every take is kept in `takes/`)")
    create_markdown_artifact("\n\n".join(parts), key=key, description="scailflow result")
    publish_stage_table(summary)


def stage_rows(summary: dict) -> list[dict]:
    """One row per stage (state, seconds), generation's wait for its GPU apart, then the folder's total."""
    seconds = summary.get("stage_seconds", {})
    rows = [{"stage": s, "state": st, "seconds": seconds.get(s, "")} for s, st in summary["states"].items()]
    if summary.get("gpu_wait_s"):
        wait = summary["gpu_wait_s"]
        for row in rows:
            if row["stage"] == "generate" and isinstance(row["seconds"], float):
                row["seconds"] = round(max(row["seconds"] - wait, 0.0), 2)
        rows.append({"stage": "waiting for the GPU", "state": "", "seconds": wait})
    rows.append({"stage": "folder total", "state": summary.get("state", ""), "seconds": summary["seconds"]})
    return rows


def publish_stage_table(summary: dict) -> None:
    from prefect.artifacts import create_table_artifact

    key = artifact_key(summary["folder"])
    create_table_artifact(stage_rows(summary), key=f"{key}-stages", description="stage states and seconds")


def publish_failure(summary: dict) -> None:
    """A failed folder's artifact: which stage failed and why, and the stage table."""
    from prefect.artifacts import create_markdown_artifact

    text = (
        f"### {Path(summary['folder']).name}: **Failed** in `{summary['failed_stage']}`\n\n"
        f"{summary['error']}\n\nfolder `{summary['folder']}`, outputs `{summary['out_dir']}`"
    )
    create_markdown_artifact(text, key=artifact_key(summary["folder"]), description="scailflow: failed")
    publish_stage_table(summary)


def publish_batch_summary(name: str, rows: list[dict]) -> None:
    """The batch at a glance: folder, state, reason, video, seconds."""
    from prefect.artifacts import create_table_artifact

    key = "scailflow-batch-" + "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    create_table_artifact(rows, key=key[:60], description=f"batch {name}: one row per folder")
