"""`scailflow generate` (the official generate.py's flags) and `scailflow convert` (the official convert.py's).

The sampling and model flags come from the option models (scail/options.py); only the prepared files are
declared here. Imports nothing heavy until a command runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from scailflow.errors import InputError
from scailflow.options import add_flags, from_flags
from scailflow.progress import reporting, terminal
from scailflow.scail.options import ModelOptions, SamplingOptions

log = logging.getLogger("scailflow.scail")
PARALLEL_MODULE = "scailflow.scail.parallel"


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Flags that choose and place the model (shared by generate, run, batch and worker)."""
    add_flags(p.add_argument_group("model"), ModelOptions)


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="reference image (ref.jpg)")
    p.add_argument("--mask_image", required=True, help="reference mask (ref_mask.png)")
    p.add_argument("--pose", required=True, help="driving input (rendered_v2.mp4)")
    p.add_argument("--mask_video", required=True, help="driving mask (rendered_mask_v2.mp4 / replace_mask.mp4)")
    p.add_argument("--additional_ref_image", nargs="*", default=[])
    p.add_argument("--additional_ref_mask_image", nargs="*", default=[])
    p.add_argument("--replace_flag", action="store_true", help="replacement mode")
    p.add_argument("--prompt", default="", help="positive prompt (or @file.txt)")
    p.add_argument("--save_file", required=True, help="output .mp4")
    p.add_argument(
        "--gpus", type=int, default=1, help="GPUs for this clip (CFG x Ulysses via torchrun, scail/parallel.py)"
    )
    add_flags(p.add_argument_group("sampling"), SamplingOptions)
    add_model_arguments(p)


def read_prompt(value: str) -> str:
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise InputError(f"prompt file not found: {path}")
        return path.read_text(encoding="utf-8").strip()
    return value


def request_from_args(args, save_file: Path | None = None):
    """The prepared files of `generate`'s command line as a GenerateRequest."""
    from scailflow.scail.generate import GenerateRequest

    return GenerateRequest(
        image=Path(args.image),
        mask_image=Path(args.mask_image),
        pose=Path(args.pose),
        mask_video=Path(args.mask_video),
        prompt=read_prompt(args.prompt),
        save_file=save_file or Path(args.save_file),
        replace=args.replace_flag,
        additional_ref_images=[Path(p) for p in args.additional_ref_image],
        additional_ref_masks=[Path(p) for p in args.additional_ref_mask_image],
    )


def run_generate(args) -> int:
    if getattr(args, "gpus", 1) > 1 and "RANK" not in os.environ:  # several GPUs: re-run under torchrun
        argv = sys.argv[sys.argv.index("generate") + 1 :] if "generate" in sys.argv else sys.argv[1:]
        return launch(args.gpus, strip_gpus_flag(argv))
    from scailflow.scail.generate import generate, read_conditioning
    from scailflow.scail.loading import load_pipeline

    req = request_from_args(args)
    sampling = from_flags(SamplingOptions, args)
    model = from_flags(ModelOptions, args)
    inputs = read_conditioning(req)  # bad files fail before the model loads
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
