"""`scailflow generate` (the official generate.py's flags) and `scailflow convert` (the official convert.py's).

Every flag of the official generate.py is accepted with its official meaning (README, "Official command lines").
The flags and the request they describe are in scail/arguments.py (shared with scail/parallel.py, the torchrun
entry of several GPUs). Imports nothing heavy until a command runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from scailflow.errors import InputError
from scailflow.options import from_flags
from scailflow.progress import reporting, terminal
from scailflow.scail.arguments import add_generate_arguments as add_generate_arguments  # the command's flags
from scailflow.scail.arguments import request_from_args
from scailflow.scail.options import ModelOptions, ParallelOptions, SamplingOptions

log = logging.getLogger("scailflow.scail")
PARALLEL_MODULE = "scailflow.scail.parallel"


def run_generate(args) -> int:
    parallel = from_flags(ParallelOptions, args)
    for note in parallel.notes():
        log.info("note: %s", note)
    argv = sys.argv[sys.argv.index("generate") + 1 :] if "generate" in sys.argv else sys.argv[1:]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "RANK" in os.environ and world > 1:  # started by torchrun, as the official multi-GPU command line does
        if parallel.world_size not in (1, world):
            raise InputError(
                f"{parallel.world_size} GPUs asked for (--gpus, or --ulysses_size x --ring_size) but torchrun "
                f"started {world} processes"
            )
        from scailflow.scail.parallel import main as parallel_main

        return parallel_main(argv)
    if parallel.world_size > 1:  # several GPUs: re-run under torchrun
        req = request_from_args(args)  # bad arguments fail here, once, before any process starts
        if not args.save_file:  # every rank writes to the one automatic name chosen now
            argv = [*argv, "--save_file", str(req.save_file)]
        return launch(parallel.world_size, strip_gpus_flag(argv))
    from scailflow.scail.inputs import read_conditioning

    req = request_from_args(args)
    sampling = from_flags(SamplingOptions, args)
    model = from_flags(ModelOptions, args).for_preset(sampling.preset)
    from scailflow.scail.prefetch import start as start_prefetch
    from scailflow.scail.release_files import check_release, model_weight_files

    check_release(model)  # a missing checkpoint is one line before torch is imported
    start_prefetch(model_weight_files(model))  # the disk starts on the weights while torch imports, inputs are read
    inputs = read_conditioning(req)  # bad files fail here, before torch and the model load

    from scailflow.scail.generate import generate
    from scailflow.scail.loading import load_pipeline

    pipe = load_pipeline(model)
    with reporting(terminal("generate")):
        record = generate(pipe, req, sampling, inputs=inputs)
    print(f"wrote {record['output']} ({record['frames_out']} frames, seed {record['seed']}, {pipe.label})")
    return 0


def launch(gpus: int, argv: list[str]) -> int:
    """Run scail/parallel.py under torchrun with `gpus` processes (argv: the generate flags, without --gpus)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={gpus}",
        "-m",
        PARALLEL_MODULE,
        *argv,
    ]
    log.info("launching: %s", " ".join(cmd))
    env = dict(os.environ, NCCL_NVLS_ENABLE=os.environ.get("NCCL_NVLS_ENABLE", "0"))
    return subprocess.call(cmd, env=env)


def strip_gpus_flag(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--gpus":
            skip = True
            continue
        if a.startswith("--gpus="):
            continue
        out.append(a)
    return out


def add_calibrate_arguments(p: argparse.ArgumentParser) -> None:
    add_generate_arguments(p)


def run_calibrate(args) -> int:
    """`scailflow calibrate`: MagCache's magnitude ratios for these weights, from one uncached generation of the
    clip's first segment, stored beside the DiT file (or under SCAILFLOW_HOME/magcache/)."""
    from scailflow.scail.conditioning import target_size
    from scailflow.scail.generate import read_conditioning
    from scailflow.scail.loading import load_pipeline
    from scailflow.scail.step_cache import calibrate

    req = request_from_args(args, save_file=Path(os.devnull))
    sampling = from_flags(SamplingOptions, args).resolved()
    model = from_flags(ModelOptions, args).for_preset(sampling.preset).model_copy(update={"step_cache": "off"})
    cond, _ = read_conditioning(req)
    height, width = target_size(sampling.target_h, sampling.target_w, cond.ref_image.shape[:2])
    pipe = load_pipeline(model)
    with reporting(terminal("calibrate")):
        path, data = calibrate(pipe, cond, sampling, height, width)
    print(f"wrote {path} ({data['steps']} steps): `--step_cache mag` uses these ratios from now on")
    return 0


def add_convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scail-dir",
        "--scail_dir",
        required=True,
        help="SCAIL-2 folder (or the model/1/fsdp2_rank_0000_checkpoint.pt file)",
    )
    p.add_argument("--save-path", "--save_path", required=True, help="output .safetensors")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")


def run_convert(args) -> int:
    import torch

    from scailflow.scail.checkpoint import convert_training_checkpoint

    dtype = torch.bfloat16 if args.dtype == "bf16" else None
    out = convert_training_checkpoint(args.scail_dir, args.save_path, dtype)
    print(f"wrote {out}")
    return 0
