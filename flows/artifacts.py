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


def stage_seconds(futures: dict) -> dict[str, float | None]:
    """Each stage's run time as the Prefect API recorded it (retries included; ~0 when served from cache)."""
    from prefect.client.orchestration import get_client

    out: dict[str, float | None] = {}
    try:
        with get_client(sync_client=True) as client:
            for name, fut in futures.items():
                run = client.read_task_run(fut.task_run_id)
                out[name] = round(run.total_run_time.total_seconds(), 2) if run.total_run_time is not None else None
    except Exception as e:  # noqa: BLE001 - timings are a nicety; a run must not fail on them
        log.debug("no stage timings: %s", e)
    return out


def _link(path: str | Path) -> str:
    p = Path(path).resolve()
    return f"[{p}]({p.as_uri()})"


def _record(summary: dict) -> dict:
    try:
        return json.loads(Path(summary["record"]).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError):
        return {}


def _sheet_uri(out_dir: Path) -> str:
    from scailflow.masks import preview

    sheet = np.asarray(Image.open(preview(out_dir, out_dir / "masks_preview.png", frames=4)).convert("RGB"))
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
    seconds = summary.get("stage_seconds") or {}
    lines = [
        f"### {Path(summary['folder']).name}: done in {summary['seconds']} s",
        "",
        "| | |",
        "|---|---|",
        f"| output | {_link(summary['video'])} |",
        f"| video | {frames} frames at {fps:g} fps ({frames / fps:.1f} s), {sound} |",
        f"| seed | {summary['seed']} |",
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
    for stage, state in summary["states"].items():
        secs = seconds.get(stage)
        lines.append(f"| {stage} | {state} | {'' if secs is None else f'{secs:g}'} |")
    lines += [f"| **total** | | **{summary['seconds']:g}** |", ""]
    try:
        lines += [
            "**Masks over frames** (reference, then frames across the clip; rows: picture, mask, overlay). "
            f"Fix a mask by editing {_link(out_dir / 'ref_mask.png')} or the mask video, then run again.",
            "",
            f"![masks over frames]({_sheet_uri(out_dir)})",
        ]
    except Exception as e:  # noqa: BLE001
        log.warning("no mask sheet: %s", e)
    return "\n".join(lines)


def publish_artifacts(summary: dict) -> None:
    """The result (markdown: previews, absolute paths, stage seconds, masks sheet) and a table of the stages."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    key = artifact_key(summary["folder"])
    rows = [{"stage": s, "state": st} for s, st in summary["states"].items()]
    rows.append({"stage": "total seconds", "state": str(summary["seconds"])})
    try:  # the video is written: a UI problem is a warning, never a failed run
        create_markdown_artifact(result_markdown(summary), key=key, description="scailflow result")
        create_table_artifact(rows, key=f"{key}-stages", description="stage states and timing")
    except Exception as e:  # noqa: BLE001
        log.warning("could not publish the run's artifacts to the Prefect UI: %s", str(e).splitlines()[0][:200])
