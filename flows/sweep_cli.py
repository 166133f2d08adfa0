"""`scailflow sweep FOLDER --seeds N --lora_alpha 0.6,0.8,1.0 --preset fast,comfy ...`: a grid of takes, one
labelled contact sheet and a table in the Prefect UI (flows/sweep.py); `--dry-run` prints the prediction per cell and
the total, and runs nothing."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scailflow.flows.cli import add_budget_flags
    from scailflow.flows.config import JobConfig
    from scailflow.flows.sweep_options import SWEPT, add_sweep_flags
    from scailflow.options import add_flags
    from scailflow.scail.options import ModelOptions, SamplingOptions

    p.add_argument("folder", help="raw folder, as `scailflow run` takes it")
    p.add_argument("--out", help="output folder (default FOLDER/scailflow)")
    add_sweep_flags(
        p.add_argument_group(
            "the grid (comma-separated values; every combination is a take, for each seed 1..N; "
            "a flag given one value sets it for every take)"
        )
    )
    job = p.add_argument_group("job (override job.yaml; the swept options are above)")
    add_flags(job, JobConfig, only=tuple(k for k in JobConfig.model_fields if k != "sampling"))
    fixed = tuple(k for k in SamplingOptions.model_fields if k not in SWEPT and k != "seed")
    add_flags(job, SamplingOptions, prefix="sampling.", only=fixed)
    model = p.add_argument_group("model (--lora_alpha is swept above)")
    add_flags(model, ModelOptions, only=tuple(k for k in ModelOptions.model_fields if k not in SWEPT))
    add_budget_flags(p)


def sweep_of(args):
    from scailflow.flows.sweep_options import SweepOptions, given_sweep
    from scailflow.options import validated

    return validated(SweepOptions, given_sweep(args))


def run(args) -> int:
    from scailflow.flows.cli import (
        _folder_sampling,
        before_flow,
        budget_gate,
        job_overrides,
        quiet_prefect_tracebacks,
        server_api,
    )
    from scailflow.options import from_flags
    from scailflow.scail.options import ModelOptions

    sweep = sweep_of(args)
    model = from_flags(ModelOptions, args)

    def planned():
        folder, sampling = _folder_sampling(args)
        return [(folder, sampling, sweep)], model, []

    if (code := budget_gate(args, planned)) is not None:
        return code  # nothing started
    from scailflow.flows.sweep_options import cell_model, cells

    for cell in cells(sweep.values(), sweep.seed_list()):  # a bad LoRA sweep is one line before Prefect starts
        cell_model(model, cell)
    server_api()  # Prefect's environment first, before Prefect is imported
    from scailflow.flows.folder_flow import prepare
    from scailflow.flows.sweep import sweep_flow

    overrides = job_overrides(args)
    raw, _, _ = prepare(args.folder, args.out, None, overrides)  # a bad folder fails here, before Prefect runs
    if not args.debug:
        quiet_prefect_tracebacks()
    before_flow()
    result = sweep_flow(str(raw.root), sweep, raw.name, args.out, overrides=overrides, model=model)
    print(f"wrote {result['sheet']} and {result['still']} ({len(result['cells'])} takes)")
    return 0
