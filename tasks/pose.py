"""Pose stage: `rendered_v2.mp4` (the driving video copied, or the skeleton render) for the generation stage."""
from __future__ import annotations

from pathlib import Path

from prefect import task

from tasks.common import cache_key, stage_key, stage_task_options

VERSION = "pose-1"


def outputs(out_dir: str, driving_mode: str) -> list[Path]:
    names = ["rendered_v2.mp4"] + (["rendered_mask_v2.mp4"] if driving_mode == "pose" else [])
    return [Path(out_dir) / n for n in names]


def _key(p: dict) -> str:
    cfg = p["pose_cfg"]
    reads = [p["driving"], p["reference"] if cfg.get("align") else None]
    weights = [cfg.get("dwpose_det"), cfg.get("dwpose_pose"), cfg.get("nlf")] if p["driving_mode"] == "pose" else []
    params = {k: v for k, v in p.items() if k not in ("driving", "reference", "out_dir")}
    return stage_key("pose", VERSION, reads, params, weights)


@task(name="pose", cache_key_fn=cache_key(_key), **stage_task_options())
def pose_task(driving: str, out_dir: str, driving_mode: str, pose_cfg: dict, reference: str,
              max_persons: int = 2) -> dict:
    """Prepare the driving input; returns its paths (never frames)."""
    from pose import PoseWeights, prepare_driving

    weights = PoseWeights(*(Path(pose_cfg[k]) if pose_cfg.get(k) else None
                            for k in ("dwpose_det", "dwpose_pose", "nlf")))
    result = prepare_driving(Path(driving), Path(out_dir), driving=driving_mode, weights=weights,
                             reference_image=Path(reference), align=bool(pose_cfg.get("align")),
                             max_persons=max_persons, legacy_mask_colours=bool(pose_cfg.get("legacy_mask_colours")))
    return result.to_dict()
