"""Pose stage: `rendered_v2.mp4` (the driving video copied, or the skeleton render) for the generation stage."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task

from scailflow.pose.options import PoseOptions
from scailflow.tasks.common import cache_key, stage_key, stage_task_options, true_key, write_manifest

if TYPE_CHECKING:
    from scailflow.pose.stage import PoseResult

VERSION = "pose-3"


def outputs(out_dir: str, driving_mode: str) -> list[Path]:
    from scailflow.pose import output_paths

    return output_paths(out_dir, driving_mode)


def pose_weights(opts: PoseOptions):
    """Weights from the environment (SCAILFLOW_DWPOSE_DET, ...), overridden by job.yaml / pipelines.yaml."""
    from scailflow.pose import PoseWeights

    return PoseWeights.from_env().overridden_by(PoseWeights.from_config(opts.model_dump()))


def _base(p: dict) -> str:
    opts: PoseOptions = p["opts"]
    reads = [p["driving"], p["reference"] if opts.align else None]
    w = pose_weights(opts) if p["driving_mode"] == "pose" else None
    weights = [w.dwpose_det, w.dwpose_pose, w.nlf] if w else []
    params = {k: v for k, v in p.items() if k not in ("driving", "reference", "out_dir", "rerun")}
    if params.get("driving_fps") is None:  # left out at its default, so earlier cached poses stay valid
        params.pop("driving_fps", None)
    return stage_key("pose", VERSION, p["out_dir"], reads, params, weights)


def _key(p: dict) -> str:
    return true_key(p["out_dir"], "pose", _base(p), p.get("rerun", False))


@task(name="pose", cache_key_fn=cache_key(_key), **stage_task_options())
def pose_task(
    driving: str,
    out_dir: str,
    driving_mode: str,
    opts: PoseOptions,
    reference: str,
    max_persons: int = 2,
    rerun: bool = False,
    driving_fps: float | str | None = None,
) -> PoseResult:
    """Prepare the driving input; returns its paths (never frames). `rerun`: run even if cached."""
    from scailflow.pose import prepare_driving
    from scailflow.tasks.progress import stage

    t0 = time.perf_counter()
    with stage("pose", out_dir):
        result = prepare_driving(
            Path(driving),
            Path(out_dir),
            opts,
            driving=driving_mode,
            reference_image=Path(reference),
            max_persons=max_persons,
            weights=pose_weights(opts),
            driving_fps=driving_fps,
        )
    write_manifest(out_dir, "pose", outputs(out_dir, driving_mode))
    return result.model_copy(update={"seconds": round(time.perf_counter() - t0, 3)})
