"""`scailflow masks preview FOLDER [--out PATH] [--video PATH]`: look at masks before (re)running generation.

The main console script builds the parser; these two functions fill in and run the `masks` subcommand.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `masks` subcommand's arguments (its one action, `preview`) to `parser`."""
    parser.add_argument("action", choices=["preview"], help="preview: contact sheet of the masks over the frames")
    parser.add_argument("folder", type=Path, help="input folder or masks output folder")
    parser.add_argument(
        "--out", type=Path, default=None, help="contact sheet PNG (default: masks_preview.png beside the masks)"
    )
    parser.add_argument("--video", type=Path, default=None, help="also write a side-by-side overlay mp4 here")
    parser.add_argument("--frames", type=int, default=6, help="driving frames on the sheet (default: %(default)s)")
    parser.add_argument(
        "--tile", type=int, default=256, help="pixels on each tile's shorter side (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the `masks` subcommand; print the written path(s); return 0. Bad input raises InputError."""
    from .sheet import preview

    sheet = preview(args.folder, args.out, video_out=args.video, frames=max(1, args.frames), tile=max(32, args.tile))
    print(sheet)
    if args.video is not None:
        print(args.video)
    return 0
