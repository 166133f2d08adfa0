"""`scailflow sweep FOLDER --seeds N --pose_strength 0.5,1 --preset fast,comfy ...`: a grid of takes and one
labelled contact sheet (flows/sweep.py)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scailflow.flows.sweep import SWEEPABLE
    from scailflow.scail.arguments import add_model_arguments

    p.add_argument("folder", help="raw folder, as `scailflow run` takes it")
    p.add_argument("--out", help="output folder (default FOLDER/scailflow)")
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="seeds per setting: 1..N (default 1)")
    grid = p.add_argument_group("values to sweep (comma-separated; the grid is every combination)")
    for key in SWEEPABLE:
        grid.add_argument(f"--{key}", dest=f"sweep_{key}", default=None, metavar="V1,V2,...")
    add_model_arguments(p)


def run(args) -> int:
    from scailflow.errors import InputError
    from scailflow.flows.cli import before_flow, quiet_prefect_tracebacks, server_api
    from scailflow.flows.sweep import SWEEPABLE, parse_values, run_sweep
    from scailflow.options import from_flags
    from scailflow.scail.options import ModelOptions

    if args.seeds < 1:
        raise InputError("--seeds must be 1 or more")
    values = {k: parse_values(k, getattr(args, f"sweep_{k}")) for k in SWEEPABLE if getattr(args, f"sweep_{k}")}
    server_api()  # Prefect's environment first, before Prefect is imported
    model = from_flags(ModelOptions, args)
    if not args.debug:
        quiet_prefect_tracebacks()
    before_flow()
    result = run_sweep(args.folder, values, list(range(1, args.seeds + 1)), {}, model, args.out)
    print(f"wrote {result['sheet']} and {result['still']} ({len(result['cells'])} takes)")
    return 0
