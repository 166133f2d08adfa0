"""`scailflow pose VIDEO --out DIR [--driving pose] [--dwpose-det ... --dwpose-pose ... --nlf ...]` subcommand."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from scailflow.errors import InputError
from scailflow.options import DrivingMode, add_flags, choices, from_flags
from scailflow.pose.options import Palette, PoseOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The pose subcommand's arguments: the files, then the pose options (the same fields as job.yaml `pose:`)."""
    from scailflow.masks.options import MaskOptions

    parser.add_argument("video", type=Path, help="driving video")
    parser.add_argument("--out", type=Path, required=True, help="output folder (rendered_v2.mp4, ...)")
    parser.add_argument(
        "--driving",
        choices=choices(DrivingMode),
        default="end-to-end",
        help="end-to-end: copy the driving video; pose: render the skeleton (default end-to-end)",
    )
    parser.add_argument("--config", type=Path, help="pipelines.yaml with a pose: section of weight paths")
    parser.add_argument("--reference", type=Path, help="reference image (for --align)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--palette", choices=choices(Palette), default="v2", help="limb colours (v2 P0/P1 or v1 base)")
    add_flags(parser, PoseOptions)
    add_flags(parser, MaskOptions, only=("max_persons",))


def weights_from_args(args: argparse.Namespace, opts: PoseOptions):
    """Environment, then the config file, then the command line (later wins)."""
    from scailflow.pose.weights import PoseWeights

    weights = PoseWeights.from_env()
    if getattr(args, "config", None) is not None:
        weights = weights.overridden_by(PoseWeights.from_yaml(args.config))
    return weights.overridden_by(PoseWeights.from_config(opts.model_dump()))


def run(args: argparse.Namespace) -> int:
    """Run the pose stage; prints the result as JSON. Bad input is one line on stderr and exit code 2."""
    from scailflow.masks.options import MaskOptions

    logging.getLogger("scailflow.pose").setLevel(logging.INFO)
    opts = from_flags(PoseOptions, args)
    max_persons = from_flags(MaskOptions, args).max_persons
    try:
        from scailflow.pose.stage import prepare_driving

        result = prepare_driving(
            args.video,
            args.out,
            driving=args.driving,
            weights=weights_from_args(args, opts),
            reference_image=args.reference,
            align=opts.align,
            max_persons=max_persons,
            device=args.device,
            legacy_mask_colours=opts.legacy_mask_colours,
            palette=args.palette,
        )
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2))
    return 0
