"""Masks stage: `ref_mask.png` and the driving mask video, coloured as SCAIL-2 reads them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task

from scailflow.layout import segmentation_dir
from scailflow.masks.options import MaskOptions
from scailflow.tasks.common import cache_key, stage_key, stage_task_options, true_key, write_manifest

if TYPE_CHECKING:
    from scailflow.masks.stage import MaskResult

VERSION = "masks-2"


def outputs(out_dir: str, mode: str, extra_refs: list, driving_mode: str = "end-to-end") -> list[Path]:
    from scailflow.masks import output_paths

    ref, driving, *extra = output_paths(segmentation_dir(out_dir, mode, driving_mode), mode, len(extra_refs))
    return [Path(out_dir) / ref.name, driving, *(Path(out_dir) / p.name for p in extra)]


def _key(p: dict) -> str:
    opts: MaskOptions = p["opts"]
    reads = [p["ref"], p["driving"]] + [img for img, _ in p["extra_refs"]]
    params = {
        "mode": p["mode"],
        "driving_mode": p["driving_mode"],
        "kinds": [k for _, k in p["extra_refs"]],
        "opts": opts.model_dump(mode="json", exclude={"sam2_checkpoint", "sam3_checkpoint"}),
    }
    if p.get("driving_fps") is not None:  # left out at its default, so earlier cached masks stay valid
        params["driving_fps"] = p["driving_fps"]
    base = stage_key("masks", VERSION, p["out_dir"], reads, params, [opts.sam2_checkpoint, opts.sam3_checkpoint])
    # hand edits of the masks are welcome (generation hashes what it reads): the manifest checks that the files
    # are there and were made for this key, not that they are byte for byte what the stage wrote
    return true_key(p["out_dir"], "masks", base, p.get("rerun", False), check_hashes=False)


@task(name="masks", cache_key_fn=cache_key(_key), **stage_task_options())
def masks_task(
    ref: str,
    driving: str,
    out_dir: str,
    mode: str,
    opts: MaskOptions,
    extra_refs: list[tuple[str, str]],
    driving_mode: str = "end-to-end",
    rerun: bool = False,
    driving_fps: float | str | None = None,
) -> MaskResult:
    """Segment, colour and write the masks; returns their paths. Hand-edited masks are never overwritten
    while their inputs are unchanged (and they were made for this folder and these options): the cache answers
    first. `rerun`: run even if cached."""
    import shutil

    from scailflow.files import atomic_path
    from scailflow.masks import make_masks
    from scailflow.tasks.progress import stage

    t0 = time.perf_counter()
    where = segmentation_dir(out_dir, mode, driving_mode)
    with stage("masks", out_dir):
        result = make_masks(
            Path(ref),
            Path(driving),
            where,
            opts,
            mode=mode,
            extra_refs=[(Path(i), k) for i, k in extra_refs],
            driving_fps=driving_fps,
        )
    if where != Path(out_dir):  # publish the reference masks beside the other outputs
        published = []
        for src in [result.ref_mask, *result.extra_ref_masks]:
            with atomic_path(Path(out_dir) / src.name) as tmp:
                shutil.copyfile(src, tmp)
            published.append(Path(out_dir) / src.name)
        result = result.model_copy(update={"ref_mask": published[0], "extra_ref_masks": published[1:]})
    fitted = [result.ref_image] if result.ref_image else []  # fit_reference: generation reads it too
    write_manifest(out_dir, "masks", [*outputs(out_dir, mode, extra_refs, driving_mode), *fitted])
    return result.model_copy(update={"seconds": round(time.perf_counter() - t0, 3)})
