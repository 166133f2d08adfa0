"""Masks stage: `ref_mask.png` and the driving mask video, coloured as SCAIL-2 reads them."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import task

from scailflow.masks.options import MaskOptions
from scailflow.tasks.common import cache_key, stage_key, stage_task_options, true_key, write_manifest

VERSION = "masks-2"
SEGMENTATION_DIR = "segmentation"


def seg_dir(out_dir: str, mode: str, driving_mode: str) -> Path:
    """Where make_masks writes. Pose-driven animation: a subfolder, since `rendered_mask_v2.mp4` beside the outputs
    is then the pose stage's skeleton mask; only the reference masks are published next to it."""
    pose_anim = driving_mode == "pose" and mode == "animation"
    return Path(out_dir) / SEGMENTATION_DIR if pose_anim else Path(out_dir)


def outputs(out_dir: str, mode: str, extra_refs: list, driving_mode: str = "end-to-end") -> list[Path]:
    from scailflow.masks import output_paths

    ref, driving, *extra = output_paths(seg_dir(out_dir, mode, driving_mode), mode, len(extra_refs))
    return [Path(out_dir) / ref.name, driving, *(Path(out_dir) / p.name for p in extra)]


def _key(p: dict) -> str:
    opts: MaskOptions = p["opts"]
    reads = [p["ref"], p["driving"]] + [img for img, _ in p["extra_refs"]]
    params = {
        "mode": p["mode"],
        "driving_mode": p["driving_mode"],
        "kinds": [k for _, k in p["extra_refs"]],
        "driving_fps": p.get("driving_fps"),
        "opts": opts.model_dump(mode="json", exclude={"sam2_checkpoint", "sam3_checkpoint"}),
    }
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
) -> dict:
    """Segment, colour and write the masks; returns their paths. Hand-edited masks are never overwritten
    while their inputs are unchanged (and they were made for this folder and these options): the cache answers
    first. `rerun`: run even if cached."""
    import shutil

    from scailflow.files import atomic_path
    from scailflow.masks import make_masks
    from scailflow.tasks.progress import stage

    t0 = time.perf_counter()
    where = seg_dir(out_dir, mode, driving_mode)
    with stage("masks", out_dir):
        result = make_masks(
            Path(ref),
            Path(driving),
            where,
            mode=mode,
            extra_refs=[(Path(i), k) for i, k in extra_refs],
            backend=opts.backend,
            sam2_checkpoint=Path(opts.sam2_checkpoint) if opts.sam2_checkpoint else None,
            sam2_config=opts.sam2_config,
            max_persons=opts.max_persons,
            replace_index=opts.replace_index,
            dilate_px=opts.dilate_px,
            sam3_checkpoint=Path(opts.sam3_checkpoint) if opts.sam3_checkpoint else None,
            sam3_prompt=opts.sam3_prompt,
            fit_reference_size=opts.fit_reference,
            driving_fps=driving_fps,
        )
    found = result.to_dict()
    if where != Path(out_dir):  # publish the reference masks beside the other outputs
        published = []
        for src in [result.ref_mask, *result.extra_ref_masks]:
            with atomic_path(Path(out_dir) / src.name) as tmp:
                shutil.copyfile(src, tmp)
            published.append(str(Path(out_dir) / src.name))
        found["ref_mask"], found["extra_ref_masks"] = published[0], published[1:]
    fitted = [found["ref_image"]] if found.get("ref_image") else []  # fit_reference: generation reads it too
    write_manifest(out_dir, "masks", [*outputs(out_dir, mode, extra_refs, driving_mode), *fitted])
    return found | {"seconds": round(time.perf_counter() - t0, 3)}
