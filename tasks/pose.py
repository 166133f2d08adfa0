"""Pose stage: `rendered_v2.mp4` (the driving video copied, or the skeleton render) for the generation stage."""
from __future__ import annotations

from pathlib import Path

from prefect import task

from scailflow.tasks.common import cache_key, stage_key, stage_task_options

VERSION = "pose-1"


def outputs(out_dir: str, driving_mode: str) -> list[Path]:
    names = ["rendered_v2.mp4"] + (["rendered_mask_v2.mp4"] if driving_mode == "pose" else [])
    return [Path(out_dir) / n for n in names]


def pose_weights(pose_cfg: dict):
    """Weights from the environment (SCAILFLOW_DWPOSE_DET, ...), overridden by job.yaml / pipelines.yaml."""
    from scailflow.pose import PoseWeights

    return PoseWeights.from_env().overridden_by(PoseWeights.from_config(pose_cfg))


def _key(p: dict) -> str:
    cfg = p["pose_cfg"]
    reads = [p["driving"], p["reference"] if cfg.get("align") else None]
    w = pose_weights(cfg) if p["driving_mode"] == "pose" else None
    weights = [w.dwpose_det, w.dwpose_pose, w.nlf] if w else []
    params = {k: v for k, v in p.items() if k not in ("driving", "reference", "out_dir")}
    return stage_key("pose", VERSION, p["out_dir"], reads, params, weights)


@task(name="pose", cache_key_fn=cache_key(_key), **stage_task_options())
def pose_task(driving: str, out_dir: str, driving_mode: str, pose_cfg: dict, reference: str,
              max_persons: int = 2) -> dict:
    """Prepare the driving input; returns its paths (never frames)."""
    from scailflow.pose import prepare_driving

    result = prepare_driving(Path(driving), Path(out_dir), driving=driving_mode, weights=pose_weights(pose_cfg),
                             reference_image=Path(reference), align=bool(pose_cfg.get("align")),
                             max_persons=max_persons, legacy_mask_colours=bool(pose_cfg.get("legacy_mask_colours")))
    return result.to_dict()
