"""`scailflow pose VIDEO --out DIR [--driving pose] [--det ... --pose ... --nlf ...]` subcommand."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from scailflow.errors import InputError
from scailflow.options import DrivingMode, choices
from scailflow.pose.options import Palette


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the pose subcommand's arguments to `parser`."""
    parser.add_argument("video", type=Path, help="driving video")
    parser.add_argument("--out", type=Path, required=True, help="output folder (rendered_v2.mp4, ...)")
    parser.add_argument(
        "--driving",
        choices=choices(DrivingMode),
        default="end-to-end",
        help="end-to-end: copy the driving video; pose: render the skeleton (default end-to-end)",
    )
    parser.add_argument("--config", type=Path, help="pipelines.yaml with a pose: section of weight paths")
    parser.add_argument("--det", type=Path, help="yolox_l.onnx (env SCAILFLOW_DWPOSE_DET)")
    parser.add_argument("--pose", type=Path, help="dw-ll_ucoco_384.onnx (env SCAILFLOW_DWPOSE_POSE)")
    parser.add_argument("--nlf", type=Path, help="nlf_l_multi_0.3.2.torchscript (env SCAILFLOW_NLF)")
    parser.add_argument("--reference", type=Path, help="reference image (for --align)")
    parser.add_argument(
        "--align",
        action="store_true",
        help="scale/shift the driving skeleton to the reference person's size and position",
    )
    parser.add_argument("--max-persons", type=int, default=2, help="people tracked, left to right (default 2)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--palette", choices=choices(Palette), default="v2", help="limb colours (v2 P0/P1 or v1 base)")
    parser.add_argument(
        "--legacy-mask-colours",
        action="store_true",
        help="reproduce the official pose-mode mask render's red/blue and cyan/yellow swap",
    )


def weights_from_args(args: argparse.Namespace):
    from scailflow.pose.weights import PoseWeights

    """Environment, then the config file, then the command line (later wins)."""
    weights = PoseWeights.from_env()
    if getattr(args, "config", None) is not None:
        weights = weights.overridden_by(PoseWeights.from_yaml(args.config))
    return weights.overridden_by(PoseWeights(dwpose_det=args.det, dwpose_pose=args.pose, nlf=args.nlf))


def run(args: argparse.Namespace) -> int:
    """Run the pose stage; prints the result as JSON. Bad input is one line on stderr and exit code 2."""
    logging.getLogger("scailflow.pose").setLevel(logging.INFO)
    try:
        from scailflow.pose.stage import prepare_driving

        result = prepare_driving(
            args.video,
            args.out,
            driving=args.driving,
            weights=weights_from_args(args),
            reference_image=args.reference,
            align=args.align,
            max_persons=args.max_persons,
            device=args.device,
            legacy_mask_colours=args.legacy_mask_colours,
            palette=args.palette,
        )
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2))
    return 0
