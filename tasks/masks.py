"""Masks stage: `ref_mask.png` and the driving mask video, coloured as SCAIL-2 reads them."""
from __future__ import annotations

from pathlib import Path

from prefect import task

from tasks.common import cache_key, stage_key, stage_task_options

VERSION = "masks-1"


def outputs(out_dir: str, mode: str, extra_refs: list) -> list[Path]:
    out = Path(out_dir)
    names = ["ref_mask.png", "rendered_mask_v2.mp4" if mode == "animation" else "replace_mask.mp4"]
    return [out / n for n in names] + [out / f"extra_ref_mask_{i}.png" for i in range(len(extra_refs))]


def _key(p: dict) -> str:
    cfg = p["mask_cfg"]
    reads = [p["ref"], p["driving"]] + [img for img, _ in p["extra_refs"]]
    params = {"mode": p["mode"], "kinds": [k for _, k in p["extra_refs"]],
              **{k: v for k, v in cfg.items() if k != "sam2_checkpoint"}}
    return stage_key("masks", VERSION, reads, params, [cfg.get("sam2_checkpoint")])


@task(name="masks", cache_key_fn=cache_key(_key), **stage_task_options())
def masks_task(ref: str, driving: str, out_dir: str, mode: str, mask_cfg: dict,
               extra_refs: list[tuple[str, str]]) -> dict:
    """Segment, colour and write the masks; returns their paths. Hand-edited masks are never overwritten
    while their inputs are unchanged: the cache answers first."""
    from masks import make_masks

    result = make_masks(Path(ref), Path(driving), Path(out_dir), mode=mode,
                        extra_refs=[(Path(i), k) for i, k in extra_refs], backend=mask_cfg["backend"],
                        sam2_checkpoint=Path(mask_cfg["sam2_checkpoint"]) if mask_cfg.get("sam2_checkpoint") else None,
                        sam2_config=mask_cfg.get("sam2_config"), max_persons=mask_cfg["max_persons"],
                        replace_index=mask_cfg.get("replace_index"), dilate_px=mask_cfg["dilate_px"])
    return result.to_dict()
