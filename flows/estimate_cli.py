"""`scailflow estimate FOLDER [options]`: predicted seconds, GPU-minutes and cost before a run (flows/estimate.py)."""

from __future__ import annotations

import argparse

BUDGET_FLAGS = ("gpu", "gpu_price", "max_gpu_minutes")  # BudgetOptions less --dry-run (estimate runs nothing)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scailflow.flows.cli import add_job_flags
    from scailflow.flows.config import BudgetOptions
    from scailflow.options import add_flags
    from scailflow.scail.arguments import add_model_arguments

    p.add_argument(
        "folders",
        nargs="+",
        metavar="FOLDER",
        help="raw folders, as `scailflow run` takes them, or one pipelines.yaml (its folders and sweeps, as "
        "`scailflow batch --dry-run` prints them)",
    )
    add_flags(p.add_argument_group("budget"), BudgetOptions, only=BUDGET_FLAGS)
    p.add_argument(
        "--check",
        action="store_true",
        help="also replay this machine's history: each run predicted from the runs before it, against its actual time",
    )
    p.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="estimate `scailflow sweep` of these folders: per take and the total, the preprocessing counted once "
        "(repeatable: --sweep seeds=4 --sweep guidance=3,5 --sweep lora_alpha=0.6,1; keys as sweep's flags)",
    )
    add_job_flags(p)
    add_model_arguments(p)


def run(args) -> int:
    import sys
    from pathlib import Path

    from scailflow.flows.cli import job_overrides
    from scailflow.flows.config import BudgetOptions, load_job
    from scailflow.flows.estimate import REFUSED_EXIT, plan, read_history
    from scailflow.options import from_flags
    from scailflow.scail.options import ModelOptions

    budget = from_flags(BudgetOptions, args)
    model = from_flags(ModelOptions, args)
    history = read_history()
    sweep = None
    if args.sweep:
        from scailflow.flows.sweep_options import SweepOptions, parse_sweep_items
        from scailflow.options import validated

        sweep = validated(SweepOptions, parse_sweep_items(args.sweep))
    left_out = []
    if len(args.folders) == 1 and Path(args.folders[0]).suffix in (".yaml", ".yml") and Path(args.folders[0]).is_file():
        from argparse import Namespace

        from scailflow.errors import InputError
        from scailflow.flows.cli import _batch_sampling

        if sweep is not None:
            raise InputError("--sweep: a pipelines.yaml declares its sweeps itself (`sweep:` under a pipeline)")
        jobs, model, left_out = _batch_sampling(Namespace(**vars(args), pipelines=args.folders[0], pipeline=None))
    else:
        jobs = [
            (folder, load_job(Path(folder), overrides=job_overrides(args)).sampling, sweep) for folder in args.folders
        ]
    predicted = plan(jobs, model, budget.gpu, budget.gpu_price, history)
    print("\n".join(left_out + predicted.lines))
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
    if len(jobs) > 1:
        print(predicted.total())
    if refused := predicted.refusal(budget.max_gpu_minutes):
        print(refused, file=sys.stderr)
        return REFUSED_EXIT
    return 0
