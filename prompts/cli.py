"""`scailflow prompt ...`: the prompt enhancer as a command, with every flag of the official prompt_enhancer.py.

The main console script builds the parser; these two functions fill in and run the `prompt` subcommand.
The key comes from GEMINI_API_KEY / GOOGLE_API_KEY or, as in the official helper, `--api_key`; it is never
printed, logged or written (and a command line holding it is redacted in every argparse message, scailflow/cli.py).
Prefer the environment: a flag's value is visible to other users in `ps` and stays in shell history.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from scailflow.options import Mode, add_flags, choices, from_flags

from .options import PromptOptions

LOG = logging.getLogger("scailflow.prompts")
OFFICIAL_EXAMPLES = Path("prompt_examples.txt")  # the official helper's default, read from the working directory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the prompt enhancer's flags to `parser`: the options from PromptOptions, the per-call ones here."""
    parser.add_argument("--video", type=Path, required=True, help="driving video")
    parser.add_argument("--image", type=Path, required=True, help="reference character image")
    add_flags(parser, PromptOptions, command="prompt", required=("instruction",))
    parser.add_argument(
        "--mode", choices=choices(Mode), default="replacement", help="prompt template (default: %(default)s)"
    )
    parser.add_argument(
        "--api_key",
        "--api-key",
        default=None,
        help="Gemini API key (default: $GEMINI_API_KEY, else $GOOGLE_API_KEY; the environment is safer: a flag "
        "shows in `ps`)",
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


def examples_file(given: Path | None) -> Path | None:
    """The few-shot file: the one given; else ./prompt_examples.txt (the official default) when it is here; else
    None (the packaged examples). The official name given but absent here also means the packaged examples, so the
    official command line runs unchanged outside the official repository."""
    if given is not None and (given.exists() or given != OFFICIAL_EXAMPLES):
        return given
    if OFFICIAL_EXAMPLES.is_file():
        return OFFICIAL_EXAMPLES
    if given is not None:
        LOG.info("%s is not in %s: using scailflow's packaged examples", OFFICIAL_EXAMPLES, Path.cwd())
    return None


def run(args: argparse.Namespace) -> int:
    """Enhance the prompt described by `args`, print it, return 0. Bad input raises InputError."""
    from .enhance import GeminiAccess, enhance_prompt

    opts = from_flags(PromptOptions, args)
    examples = examples_file(Path(opts.examples) if opts.examples else None)
    result = enhance_prompt(
        args.video,
        args.image,
        opts.model_copy(update={"examples": str(examples) if examples else None}),
        mode=args.mode,
        access=GeminiAccess(api_key=args.api_key, base_url=args.base_url),
        output=args.output,
        caption_out=args.caption_out,
        cache_dir=args.cache_dir,
        max_example_chars=args.max_example_chars,
    )
    print(result.prompt)
    return 0
