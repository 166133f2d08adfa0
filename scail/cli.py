"""`scailflow generate` (the official generate.py's flags) and `scailflow convert` (the official convert.py's)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from scailflow.scail.options import OFFLOAD_MODES, PRESETS, SOLVERS, SamplingOptions

log = logging.getLogger("scailflow.scail")

def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Flags that choose and place the model (shared by generate, run and batch)."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default="scail2", choices=("scail2", "tiny-random"),
                   help="tiny-random: tiny untrained model built in memory (output is noise), to check an install")
    g.add_argument("--ckpt_dir", "--ckpt-dir", help="SCAIL-2 release folder (VAE, umt5-xxl, CLIP)")
    g.add_argument("--scail_path", "--scail-path", help="converted SCAIL-2 DiT .safetensors")
    g.add_argument("--lora_path", "--lora-path", help="LoRA to merge (lightx2v or SCAIL training format)")
    g.add_argument("--lora_alpha", "--lora-alpha", type=float, default=1.0)
    g.add_argument("--offload", choices=OFFLOAD_MODES, default="none",
                   help="none: all on the GPU; model: one component at a time; block: DiT block groups streamed")
    g.add_argument("--vram_budget_gb", "--vram-budget-gb", type=float, default=None,
                   help="with --offload block: GPU memory the DiT blocks may use")
    g.add_argument("--device", default="auto")
    g.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    g.add_argument("--attention", default=None, choices=("auto", "sdpa", "cudnn", "flash", "flash3", "sage"),
                   help="attention backend (default: torch SDPA's own choice; auto: fastest available)")
    g.add_argument("--compile", action="store_true", help="torch.compile the repeated DiT block (first step slower)")
    g.add_argument("--fp8", action="store_true", help="fp8 weights and matmuls in the DiT blocks (Ada/Hopper GPUs)")
    g.add_argument("--step_cache", "--step-cache", type=float, default=None, metavar="THRESHOLD",
                   help="First Block Cache: skip the other blocks while block 0's residual changes less than this")
    g.add_argument("--vae_tiling", "--vae-tiling", action="store_true", help="decode the VAE in tiles (less memory)")


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--preset", choices=sorted(PRESETS), default="quality",
                   help="quality: 40 steps, CFG 5, UniPC; fast: 8 steps, shift 1, CFG 1 (with the lightx2v LoRA)")
    g.add_argument("--sample_steps", "--steps", type=int, default=None)
    g.add_argument("--sample_shift", "--shift", type=float, default=None)
    g.add_argument("--sample_guide_scale", "--guidance", type=float, default=None)
    g.add_argument("--sample_solver", "--solver", choices=SOLVERS, default=None)
    g.add_argument("--base_seed", "--seed", type=int, default=-1, help="-1: random (printed and recorded)")
    g.add_argument("--negative_prompt", default="")
    g.add_argument("--segment_frames", type=int, default=81)
    g.add_argument("--overlap_frames", type=int, default=5)
    g.add_argument("--keep_tail", action="store_true",
                   help="keep the trailing frames the official code drops (the last segment is padded, then trimmed)")
    g.add_argument("--target_h", "--target-h", type=int, default=896)
    g.add_argument("--target_w", "--target-w", type=int, default=512)
    g.add_argument("--fps", type=float, default=None, help="output fps (default: the driving video's; 16 = official)")


def sampling_options(args) -> SamplingOptions:
    base = dict(PRESETS[args.preset])
    for key, flag in (("steps", "sample_steps"), ("shift", "sample_shift"), ("guidance", "sample_guide_scale"),
                      ("solver", "sample_solver")):
        if getattr(args, flag) is not None:
            base[key] = getattr(args, flag)
    return SamplingOptions(**base, seed=args.base_seed, negative_prompt=args.negative_prompt,
                           segment_frames=args.segment_frames, overlap_frames=args.overlap_frames,
                           keep_tail=args.keep_tail)


def pipeline_from_args(args):
    from scailflow.scail.loading import load_pipeline

    return load_pipeline(args.model, ckpt_dir=args.ckpt_dir, scail_path=args.scail_path, device=args.device,
                         dtype=args.dtype, offload=args.offload, vram_budget_gb=args.vram_budget_gb,
                         lora_path=args.lora_path, lora_alpha=args.lora_alpha, speed=speed_options(args))


def speed_options(args) -> dict:
    """scail/speed.py's apply_speedups arguments from the flags (empty: nothing changed)."""
    out = {}
    if getattr(args, "attention", None):
        out["attention"] = args.attention
    if getattr(args, "compile", False):
        out["compile"] = True
    if getattr(args, "fp8", False):
        out["fp8"] = True
    if getattr(args, "step_cache", None):
        out["cache_threshold"] = args.step_cache
    if getattr(args, "vae_tiling", False):
        out["vae_tiling"] = True
    return out


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
    p.add_argument("--gpus", type=int, default=1,
                   help="GPUs for this clip (CFG x Ulysses via torchrun, scail/parallel.py)")
    add_sampling_arguments(p)
    add_model_arguments(p)


def read_prompt(value: str) -> str:
    if value.startswith("@"):
        from scailflow.errors import InputError

        path = Path(value[1:])
        if not path.is_file():
            raise InputError(f"prompt file not found: {path}")
        return path.read_text(encoding="utf-8").strip()
    return value


def run_generate(args) -> int:
    import os
    import sys

    if getattr(args, "gpus", 1) > 1 and "RANK" not in os.environ:  # several GPUs: re-run under torchrun
        from scailflow.scail.parallel import launch, strip_gpus_flag

        argv = sys.argv[sys.argv.index("generate") + 1:] if "generate" in sys.argv else sys.argv[1:]
        return launch(args.gpus, strip_gpus_flag(argv))
    from scailflow.scail.generate import GenerateRequest, generate, read_conditioning

    req = GenerateRequest(
        image=Path(args.image), mask_image=Path(args.mask_image), pose=Path(args.pose),
        mask_video=Path(args.mask_video), prompt=read_prompt(args.prompt), save_file=Path(args.save_file),
        replace=args.replace_flag, additional_ref_images=[Path(p) for p in args.additional_ref_image],
        additional_ref_masks=[Path(p) for p in args.additional_ref_mask_image], target_h=args.target_h,
        target_w=args.target_w, fps=args.fps)
    opts = sampling_options(args)
    from scailflow.scail.pipeline import check_size

    check_size(args.target_h, args.target_w)
    opts.check()
    inputs = read_conditioning(req)  # bad files fail before the model loads
    pipe = pipeline_from_args(args)
    record = generate(pipe, req, opts, inputs=inputs)
    print(f"wrote {record['output']} ({record['frames_out']} frames, seed {record['seed']}, {pipe.label})")
    return 0


def add_convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scail-dir", "--scail_dir", required=True,
                   help="SCAIL-2 folder (or the model/1/fsdp2_rank_0000_checkpoint.pt file)")
    p.add_argument("--save-path", "--save_path", required=True, help="output .safetensors")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")


def run_convert(args) -> int:
    import torch

    from scailflow.scail.checkpoint import convert_training_checkpoint

    dtype = torch.bfloat16 if args.dtype == "bf16" else None
    out = convert_training_checkpoint(args.scail_dir, args.save_path, dtype)
    print(f"wrote {out}")
    return 0
