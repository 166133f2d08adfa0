"""What a person wants to see of a run in the Prefect UI: masks over frames, the first output frame, timings, seed."""

from __future__ import annotations

import base64
import hashlib
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
    """Prefect artifact keys allow lowercase ASCII letters, digits and dashes only. Any other folder name (`café`,
    `名前`, dots, spaces) gets an ASCII slug plus a short hash of the real name, so two names never share a key."""
    name = Path(folder).name
    stem = "".join(c if c.isascii() and c.isalnum() else "-" for c in name.lower())
    stem = "-".join(part for part in stem.split("-") if part)
    if stem != name.lower() or not stem or len(stem) > 50:
        stem = f"{stem[:40] or 'folder'}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}".lstrip("-")
    return f"scailflow-{stem}"[:60]


def publish_artifacts(summary: dict) -> None:
    """Contact sheet of reference/mask/driving frames, the output's first frame, and a table of the run."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from scailflow.masks import preview
    from scailflow.media import read_video

    key = artifact_key(summary["folder"])
    out_dir = Path(summary["out_dir"])
    parts = [
        f"### {Path(summary['folder']).name}",
        f"`{summary['video']}`  \nseed **{summary['seed']}**, {summary['frames']} frames, model: {summary['model']}",
    ]
    try:
        sheet = preview(out_dir, out_dir / "masks_preview.png")
        parts.append(f"![masks over frames]({data_uri(np.asarray(Image.open(sheet).convert('RGB')))})")
    except Exception as e:  # noqa: BLE001 - a preview problem must not fail a finished run
        log.warning("no mask preview: %s", e)
    try:
        first, _ = read_video(summary["video"], max_frames=1)
        parts.append(f"![first output frame]({data_uri(first[0])})")
    except Exception as e:  # noqa: BLE001
        log.warning("no output thumbnail: %s", e)
    rows = [{"stage": s, "state": st} for s, st in summary["states"].items()]
    rows.append({"stage": "total seconds", "state": str(summary["seconds"])})
    try:  # the video is written: a UI problem is a warning, never a failed run
        create_markdown_artifact("\n\n".join(parts), key=key, description="scailflow result")
        create_table_artifact(rows, key=f"{key}-stages", description="stage states and timing")
    except Exception as e:  # noqa: BLE001
        log.warning("could not publish the run's artifacts to the Prefect UI: %s", str(e).splitlines()[0][:200])
