"""`scailflow pose VIDEO --out DIR [--driving pose] [--dwpose-det ... --dwpose-pose ... --nlf ...]` subcommand."""

from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    add_flags(parser, PoseOptions)
    add_flags(parser, MaskOptions, only=("max_persons",))


def weights_from_args(args: argparse.Namespace, opts: PoseOptions):
    """Environment, then the config file, then the command line (later wins)."""
    from scailflow.pose.weights import PoseWeights

    weights = PoseWeights.from_env()
    if getattr(args, "config", None) is not None:
        weights = weights.overridden_by(PoseWeights.from_yaml(args.config))
    return weights.overridden_by(PoseWeights.from_config(opts.model_dump()))


def summary(result) -> str:
    """What was written, in words (`--json` gives the full record)."""
    lines = [f"wrote {Path(result.rendered).resolve()}"]
    if result.mask_render is not None:
        lines.append(f"wrote {Path(result.mask_render).resolve()}")
    what = f"{result.frames} frames, {result.width}x{result.height} at {result.fps:g} fps"
    if result.backend in ("copy", "reencode"):
        how = "end-to-end: the driving video " + ("copied as is" if result.backend == "copy" else "re-encoded to mp4")
    else:
        people = f"{result.persons} {'person' if result.persons == 1 else 'people'}"
        how = f"pose-driven: {people}, {result.backend}" + (", aligned to the reference" if result.alignment else "")
    lines.append(f"{what}; {how}")
    if result.timings:
        names = {"read": "open", "pose2d": "2D pose", "pose3d": "3D pose", "render": "render + mask"}
        parts = ", ".join(f"{names.get(k, k)} {v:.1f} s" for k, v in result.timings.items())
        lines.append(f"{sum(result.timings.values()):.1f} s ({parts})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the pose stage; prints what it wrote (`--json`: the record as JSON). Bad input: one line, exit 2."""
    from scailflow.masks.options import MaskOptions
    from scailflow.progress import reporting, terminal

    opts = from_flags(PoseOptions, args)
    max_persons = from_flags(MaskOptions, args).max_persons
    try:
        from scailflow.pose.stage import prepare_driving

        with reporting(terminal("pose")):
            result = prepare_driving(
                args.video,
                args.out,
                opts,
                driving=args.driving,
                reference_image=args.reference,
                max_persons=max_persons,
                weights=weights_from_args(args, opts),
                device=args.device,
                palette=args.palette,
            )
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2) if args.json else summary(result))
    return 0
