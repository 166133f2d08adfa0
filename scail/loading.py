"""Loading the released SCAIL-2 folder (or the tiny random preset) into a ready SCAIL2Pipeline.

Every checkpoint is read as safetensors or with `torch.load(weights_only=True, mmap=True)`; the DiT is streamed
tensor by tensor onto the device in the target dtype, so host memory never holds the whole model.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from safetensors import safe_open

from scailflow.errors import InputError
from scailflow.scail.checkpoint import check_is_scail2, official_tensors, repack_prefix
from scailflow.scail.encoders import clip_from_wan_state_dict, umt5_from_wan_state_dict, vae_from_wan_state_dict
from scailflow.scail.lora import apply_loras, records
from scailflow.scail.model import SCAIL2Transformer
from scailflow.scail.offload import Placement
from scailflow.scail.options import ModelOptions
from scailflow.scail.pipeline import BatchedCFG, SCAIL2Pipeline
from scailflow.scail.prefetch import start as start_prefetch
from scailflow.scail.release_files import (  # noqa: F401 - T5_FILE, VAE_FILE, DOWNLOAD_HINT re-exported
    DOWNLOAD_HINT,
    T5_FILE,
    VAE_FILE,
    check_dit_path,
    configured,
    encoder_files,
    weight_files,
)
from scailflow.scail.speed import apply_speedups
from scailflow.uptime import process_seconds

log = logging.getLogger("scailflow.scail")


def torch_load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A .pth state dict, weights only (no pickled code), memory-mapped."""
    if not path.is_file():
        raise InputError(f"missing file: {path}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - the user's file is unreadable or not weights-only
        raise InputError(f"cannot load {path} as weights: {e.__class__.__name__}: {e}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise InputError(f"{path} does not hold a state dict")
    return sd


def dit_keys(path: Path) -> list[str]:
    """Fail fast, before loading anything: the DiT file exists, is safetensors and is SCAIL-2 (keys only; the one
    check of a load)."""
    check_dit_path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = list(f.keys())
    except Exception as e:  # noqa: BLE001
        raise InputError(f"cannot read {path}: {e.__class__.__name__}: {e}") from None
    prefix = repack_prefix(keys)
    check_is_scail2((k[len(prefix) :] for k in keys), str(path))
    return keys


def read_dit_file(path: Path, device, dtype: torch.dtype | None, keys: list[str] | None = None) -> dict:
    """Stream a DiT safetensors file onto `device` tensor by tensor (checkpoint.official_tensors normalises each),
    casting floats to `dtype`. `keys`: `dit_keys(path)` when the caller checked the file already."""
    keys = keys if keys is not None else dit_keys(path)
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for k, t in official_tensors(keys, f.get_tensor):
                if dtype is not None and t.is_floating_point():
                    t = t.to(dtype)
                out[k] = t.to(device)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"cannot read {path}: {e.__class__.__name__}: {e}") from None
    return out


def infer_official_config(sd: dict[str, torch.Tensor]) -> dict:
    """Official config keys from the weights' shapes (head dim 128 as in Wan, unless dim < 128)."""
    dim = sd["patch_embedding.weight"].shape[0]
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    heads = max(1, dim // 128) if dim >= 128 else 4
    return dict(
        dim=dim,
        num_heads=heads,
        num_layers=layers,
        ffn_dim=sd["blocks.0.ffn.0.weight"].shape[0],
        text_dim=sd["text_embedding.0.weight"].shape[1],
        freq_dim=sd["time_embedding.0.weight"].shape[1],
        in_dim=sd["patch_embedding.weight"].shape[1],
        mask_dim=sd["patch_embedding_mask.weight"].shape[1],
        out_dim=sd["head.head.weight"].shape[0] // 4,
        eps=1e-6,
    )


def load_transformer(
    scail_path: Path,
    device,
    dtype,
    config: dict | None = None,
    keys: list[str] | None = None,
) -> SCAIL2Transformer:
    sd = read_dit_file(scail_path, device, dtype, keys)
    if config is None:
        side = scail_path.with_name("config.json")
        config = json.loads(side.read_text()) if side.is_file() else infer_official_config(sd)
    return SCAIL2Transformer.from_official(sd, config, device=device, dtype=dtype).eval()


def read_dit_config(path: Path) -> dict:
    """The DiT's config.json (official keys: dim, num_heads, num_layers, ffn_dim, ...)."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"DiT config not found: {path}") from None
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the DiT config {path}: {e}") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: not a SCAIL-2 DiT config (a JSON object of official keys)")
    missing = [k for k in ("dim", "num_heads", "num_layers", "ffn_dim") if k not in config]
    if missing:
        raise InputError(f"{path}: not a SCAIL-2 DiT config (missing {', '.join(missing)})")
    return config


def load_pipeline(opts: ModelOptions | None = None, seed: int = 0) -> SCAIL2Pipeline:
    """Build the pipeline the options describe: `tiny-random` needs nothing; `scail2` needs the released folder and
    the converted DiT file (from the options or SCAILFLOW_CKPT_DIR / SCAILFLOW_SCAIL_PATH)."""
    opts = opts or ModelOptions()
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if opts.device == "auto" else opts.device
    if opts.dtype == "auto":
        torch_dtype = torch.bfloat16 if dev.startswith("cuda") else torch.float32
    else:
        torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[opts.dtype]
    placement = Placement(dev, opts.offload, opts.vram_budget_gb, cpu_only=("text_encoder",) if opts.t5_cpu else ())
    t0, started_at = time.perf_counter(), process_seconds()
    if opts.model == "tiny-random":
        from scailflow.scail.tiny import TINY_LABEL, tiny_components

        pipe = SCAIL2Pipeline(**tiny_components(seed), placement=placement, dtype=torch.float32, label=TINY_LABEL)
    else:
        pipe = _load_release(opts, dev, torch_dtype, placement)
    pipe.loras = records(apply_loras(pipe.transformer, opts.loras()))  # merged before fp8 quantises the weights
    if opts.cfg_batch:
        pipe.cfg = BatchedCFG()
    if opts.vae_tiling:
        pipe.vae.enable_tiling()
    pipe.speedups = apply_speedups(pipe.transformer, opts, dev)  # fp8 swaps modules: before offload hooks
    placement.prepare(
        {
            "transformer": pipe.transformer,
            "vae": pipe.vae,
            "text_encoder": pipe.text_encoder,
            "image_encoder": pipe.image_encoder,
        }
    )
    pipe.load_seconds = time.perf_counter() - t0
    job = getattr(pipe, "read_ahead_job", None)
    if job is not None:  # for the log and the record: how far the disk had read ahead when the load finished
        log.info("weights: %s", job.summary())
        pipe.read_ahead = job.record()
    pipe.load_started_at = started_at  # seconds into this process (the record's process_clock)
    log.info("loaded %s on %s in %.1f s", pipe.label, dev, pipe.load_seconds)
    return pipe


def _load_release(opts: ModelOptions, dev: str, torch_dtype: torch.dtype, placement: Placement) -> SCAIL2Pipeline:
    ckpt_dir, scail_path = configured(opts)
    if not ckpt_dir or not scail_path:  # after the official `hf download zai-org/SCAIL-2`: found in the cache
        from scailflow.scail.hub import release_paths

        ckpt_dir, scail_path = (
            (ckpt_dir, scail_path)
            if not (found := release_paths())
            else (
                ckpt_dir or found[0],
                scail_path or found[1],
            )
        )
    if not ckpt_dir or not scail_path:
        raise InputError(f"no SCAIL-2 checkpoint configured: {DOWNLOAD_HINT}")
    prefetch = start_prefetch(weight_files(ckpt_dir, scail_path))  # the disk reads ahead of the load (or already does)
    keys = dit_keys(Path(scail_path))  # fail before anything slow
    config = read_dit_config(Path(opts.scail_config_path)) if opts.scail_config_path else None
    folder = Path(ckpt_dir)
    vae_path, t5_path, clip_path = encoder_files(folder)
    tok_dir = folder / "umt5-xxl" if (folder / "umt5-xxl").is_dir() else folder
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    except Exception as e:  # noqa: BLE001
        raise InputError(f"cannot load the umt5-xxl tokenizer from {tok_dir}: {e}") from None
    load_dev = dev if opts.offload == "none" else "cpu"
    transformer = load_transformer(Path(scail_path), load_dev, torch_dtype, config=config, keys=keys)
    transformer._scail_dit_path = str(Path(scail_path).resolve())  # MagCache's ratios are kept beside it
    vae = vae_from_wan_state_dict(torch_load_weights(vae_path))
    text_encoder = umt5_from_wan_state_dict(torch_load_weights(t5_path)).to(torch_dtype)
    image_encoder = clip_from_wan_state_dict(torch_load_weights(clip_path)).to(torch_dtype)
    pipe = SCAIL2Pipeline(
        transformer,
        vae,
        text_encoder,
        tokenizer,
        image_encoder,
        placement,
        torch_dtype,
        label=f"SCAIL-2 ({Path(scail_path).name})",
    )
    pipe.read_ahead_job = prefetch  # reported once the encoders have been placed (their mmapped pages read)
    return pipe
