"""`scailflow prompt ...`: the prompt enhancer as a command, with the official helper's flags.

The main console script builds the parser; these two functions fill in and run the `prompt` subcommand.
The API key is read from the environment only, never from a flag (flags end up in shell history and `ps`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scailflow.options import Mode, choices

from .options import PromptOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the prompt enhancer's flags to `parser`."""
    parser.add_argument("--video", type=Path, required=True, help="driving video")
    parser.add_argument("--image", type=Path, required=True, help="reference character image")
    parser.add_argument(
        "--instruction",
        required=True,
        help='short request, e.g. "replace the man in the blue jacket with the person in the image"',
    )
    parser.add_argument(
        "--mode", choices=choices(Mode), default="replacement", help="prompt template (default: %(default)s)"
    )
    parser.add_argument(
        "--model", default=PromptOptions.model_fields["model"].default, help="Gemini model (default: %(default)s)"
    )
    parser.add_argument("--temperature", type=float, default=0.4, help="sampling temperature (default: %(default)s)")
    parser.add_argument(
        "--num_frames",
        type=int,
        default=8,
        help="frames sampled evenly from the video for the caption (default: %(default)s)",
    )
    parser.add_argument(
        "--examples",
        type=Path,
        default=None,
        help="few-shot example prompts, blank-line separated (default: the packaged file)",
    )
    parser.add_argument(
        "--max_example_chars", type=int, default=4000, help="characters of examples sent at most (default: %(default)s)"
    )
    parser.add_argument("--output", type=Path, default=None, help="write the prompt to this file")
    parser.add_argument("--caption_out", type=Path, default=None, help="write the video caption to this file")
    parser.add_argument(
        "--base_url", default=None, help="Gemini API endpoint override (default: $GEMINI_BASE_URL, else Google's)"
    )
    parser.add_argument(
        "--cache_dir", type=Path, default=None, help="reuse prompts made from identical inputs stored here"
    )


def run(args: argparse.Namespace) -> int:
    """Enhance the prompt described by `args`, print it, return 0. Bad input raises InputError."""
    from .enhance import enhance_prompt

    result = enhance_prompt(
        args.video,
        args.image,
        args.instruction,
        mode=args.mode,
        model=args.model,
        temperature=args.temperature,
        num_frames=args.num_frames,
        examples=args.examples,
        max_example_chars=args.max_example_chars,
        base_url=args.base_url,
        output=args.output,
        caption_out=args.caption_out,
        cache_dir=args.cache_dir,
    )
    print(result.prompt)
    return 0
