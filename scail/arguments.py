"""The generate command line: the official generate.py's flags and the request they describe.

Shared by `scailflow generate` (scail/cli.py) and the torchrun entry of several GPUs (scail/parallel.py), so neither
imports the other. The sampling, model and multi-GPU flags come from the option models (scail/options.py); only the
prepared files and where the video goes are declared here. Imports nothing heavy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scailflow.errors import InputError
from scailflow.options import add_flags, from_flags
from scailflow.scail.options import ModelOptions, ParallelOptions, SamplingOptions


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Flags that choose and place the model (shared by generate, run, batch and worker)."""
    add_flags(p.add_argument_group("model"), ModelOptions)


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="reference image (ref.jpg)")
    p.add_argument("--mask_image", required=True, help="reference mask (ref_mask.png)")
    p.add_argument("--pose", required=True, help="driving input (rendered_v2.mp4)")
    p.add_argument("--mask_video", required=True, help="driving mask (rendered_mask_v2.mp4 / replace_mask.mp4)")
    p.add_argument("--additional_ref_image", "--additional_image", nargs="*", default=[], help="extra reference images")
    p.add_argument(
        "--additional_ref_mask_image",
        "--additional_mask_image",
        nargs="*",
        default=[],
        help="one mask per extra reference image, in the same order",
    )
    p.add_argument("--replace_flag", action="store_true", help="replacement mode")
    p.add_argument("--prompt", default="", help="positive prompt (or @file.txt)")
    p.add_argument(
        "--save_file",
        default=None,
        help="output .mp4 (default: the official name, SCAIL2_<W>*<H>_<ring_size>_<prompt>_<time>.mp4, in --save_dir)",
    )
    p.add_argument("--save_dir", default=None, help="folder for the automatically named video (default: here)")
    p.add_argument("--txt", default=None, help=argparse.SUPPRESS)  # official, unimplemented there too: one line
    add_flags(p.add_argument_group("sampling"), SamplingOptions)
    add_model_arguments(p)
    add_flags(p.add_argument_group("several GPUs"), ParallelOptions)


def read_prompt(value: str) -> str:
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise InputError(f"prompt file not found: {path}")
        return path.read_text(encoding="utf-8").strip()
    return value


def save_file_from_args(args, prompt: str) -> Path:
    """--save_file, else the official automatic name (in --save_dir when given, else here)."""
    if args.save_file:
        return Path(args.save_file)
    from scailflow.scail.inputs import official_output_name

    sampling = from_flags(SamplingOptions, args)
    ring = from_flags(ParallelOptions, args).ring_size
    name = official_output_name(prompt, sampling.target_w, sampling.target_h, ring)
    return Path(args.save_dir or ".") / name


def request_from_args(args, save_file: Path | None = None):
    """The prepared files of `generate`'s command line as a GenerateRequest."""
    from scailflow.scail.inputs import GenerateRequest

    if args.txt:
        raise InputError(
            "--txt is not implemented (the official generate.py raises NotImplementedError for it too): "
            "run many clips with `scailflow batch pipelines.yaml`"
        )
    prompt = read_prompt(args.prompt)
    return GenerateRequest(
        image=Path(args.image),
        mask_image=Path(args.mask_image),
        pose=Path(args.pose),
        mask_video=Path(args.mask_video),
        prompt=prompt,
        save_file=save_file or save_file_from_args(args, prompt),
        replace=args.replace_flag,
        additional_ref_images=[Path(p) for p in args.additional_ref_image],
        additional_ref_masks=[Path(p) for p in args.additional_ref_mask_image],
        driving_fps=from_flags(SamplingOptions, args).driving_fps,
    )
