"""`scailflow estimate FOLDER [options]`: predicted seconds, GPU-minutes and cost before a run (flows/estimate.py)."""

from __future__ import annotations

import argparse

REFUSED_EXIT = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scailflow.flows.cli import add_job_flags
    from scailflow.scail.arguments import add_model_arguments

    p.add_argument("folders", nargs="+", metavar="FOLDER", help="raw folders, as `scailflow run` takes them")
    p.add_argument("--gpu", choices=("h100", "h200"), default=None, help="GPU kind (default: this machine's)")
    p.add_argument("--gpu-price", "--gpu_price", type=float, default=None, metavar="USD_PER_HOUR")
    p.add_argument(
        "--max-gpu-minutes",
        "--max_gpu_minutes",
        type=float,
        default=None,
        metavar="N",
        help=f"exit {REFUSED_EXIT} with one line when the prediction is over N GPU-minutes",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="also replay this machine's history: each run predicted from the runs before it, against its actual time",
    )
    add_job_flags(p)
    add_model_arguments(p)


def run(args) -> int:
    from pathlib import Path

    from scailflow.errors import InputError
    from scailflow.flows.cli import job_overrides
    from scailflow.flows.config import load_job
    from scailflow.flows.estimate import estimate_folder, read_history
    from scailflow.options import from_flags
    from scailflow.scail.options import ModelOptions

    model = from_flags(ModelOptions, args)
    history = read_history()
    total_min = total_s = 0.0
    for folder in args.folders:
        job = load_job(Path(folder), overrides=job_overrides(args))
        try:
            e = estimate_folder(folder, job.sampling, model, history, args.gpu)
        except LookupError as exc:
            raise InputError(str(exc)) from None
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in e.stages.items())
        cost = f", ${e.cost(args.gpu_price):.2f}" if args.gpu_price is not None else ""
        print(
            f"{Path(folder).name}: {e.frames} frames {e.width}x{e.height}, {e.segments} segment(s), {e.forwards} "
            f"DiT forwards: {e.seconds:.0f} s ({stages}); {e.gpu_minutes:.1f} GPU-minutes{cost} [{e.source}]"
        )
        total_min += e.gpu_minutes
        total_s += e.seconds
    if args.check:
        from scailflow.flows.estimate import replay_errors

        pairs = replay_errors(history)
        if pairs:
            errs = sorted(abs(p - a) / a for p, a in pairs)
            print(
                f"history: {len(pairs)} run(s) predicted from the runs before them: median error "
                f"{100 * errs[len(errs) // 2]:.0f}%, worst {100 * errs[-1]:.0f}%"
            )
        else:
            print("history: fewer than two runs of a model here, nothing to replay")
    if len(args.folders) > 1:
        cost = f", ${total_min / 60 * args.gpu_price:.2f}" if args.gpu_price is not None else ""
        print(f"total: {total_s:.0f} s, {total_min:.1f} GPU-minutes{cost}")
    if args.max_gpu_minutes is not None and total_min > args.max_gpu_minutes:
        print(
            f"error: predicted {total_min:.1f} GPU-minutes, over --max-gpu-minutes {args.max_gpu_minutes:g}: "
            "lower --steps, the size or the preset, or raise the budget",
            file=__import__("sys").stderr,
        )
        return REFUSED_EXIT
    return 0
