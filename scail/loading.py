"""Loading the released SCAIL-2 folder (or the tiny random preset) into a ready SCAIL2Pipeline.

Every checkpoint is read as safetensors or with `torch.load(weights_only=True, mmap=True)`; the DiT is streamed
tensor by tensor onto the device in the target dtype, so host memory never holds the whole model.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch
from safetensors import safe_open

from scailflow.scail.checkpoint import FP8_DTYPES, REPACK_PREFIXES, check_is_scail2
from scailflow.scail.encoders import clip_from_wan_state_dict, umt5_from_wan_state_dict, vae_from_wan_state_dict
from scailflow.scail.lora import load_lora_file, merge_lora
from scailflow.scail.model import SCAIL2Transformer
from scailflow.scail.offload import Placement
from scailflow.scail.pipeline import SCAIL2Pipeline
from scailflow.errors import InputError

log = logging.getLogger("scailflow.scail")

VAE_FILE = "Wan2.1_VAE.pth"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
CLIP_GLOB = "models_clip_*.pth"
MODELS = ("scail2", "tiny-random")
DOWNLOAD_HINT = ("download the SCAIL-2 release (Wan2.1_VAE.pth, umt5-xxl/, the CLIP visual .pth, model/) and convert "
                 "its DiT once with `scailflow convert`, then pass --ckpt_dir DIR --scail_path FILE.safetensors "
                 "(or set SCAILFLOW_CKPT_DIR / SCAILFLOW_SCAIL_PATH); `--model tiny-random` checks an installation "
                 "without weights (its output is noise)")


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


def read_dit_file(path: Path, device, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Stream a DiT safetensors file onto `device`, casting floats to `dtype` (fp8-scaled weights dequantized)."""
    check_dit_file(path)
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = list(f.keys())
            for k in keys:
                if k == "scaled_fp8" or k.endswith((".scale_weight", ".scale_input")):
                    continue
                t = f.get_tensor(k)
                if FP8_DTYPES and t.dtype in FP8_DTYPES:
                    t = t.to(torch.float32)
                    sk = k[: -len("weight")] + "scale_weight"
                    if k.endswith("weight") and sk in keys:
                        t = t * f.get_tensor(sk).to(torch.float32)
                if dtype is not None and t.is_floating_point():
                    t = t.to(dtype)
                out[k] = t.to(device)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001
        raise InputError(f"cannot read {path}: {e.__class__.__name__}: {e}") from None
    return out


def check_dit_file(path: Path) -> None:
    """Fail fast, before loading anything: the DiT file exists, is safetensors and is SCAIL-2 (keys only)."""
    if not path.is_file():
        raise InputError(f"SCAIL-2 DiT file not found: {path}")
    if path.suffix != ".safetensors":
        raise InputError(f"{path}: the DiT must be a .safetensors file (convert the training checkpoint with "
                         "`scailflow convert --scail-dir DIR --save-path FILE.safetensors`)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = list(f.keys())
    except Exception as e:  # noqa: BLE001
        raise InputError(f"cannot read {path}: {e.__class__.__name__}: {e}") from None
    check_is_scail2({k.split("diffusion_model.")[-1]: None for k in keys}, str(path))  # type: ignore[misc]


def infer_official_config(sd: dict[str, torch.Tensor]) -> dict:
    """Official config keys from the weights' shapes (head dim 128 as in Wan, unless dim < 128)."""
    sd = {k.split("diffusion_model.")[-1]: v for k, v in sd.items()}
    dim = sd["patch_embedding.weight"].shape[0]
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    heads = max(1, dim // 128) if dim >= 128 else 4
    return dict(dim=dim, num_heads=heads, num_layers=layers, ffn_dim=sd["blocks.0.ffn.0.weight"].shape[0],
                text_dim=sd["text_embedding.0.weight"].shape[1], freq_dim=sd["time_embedding.0.weight"].shape[1],
                in_dim=sd["patch_embedding.weight"].shape[1], mask_dim=sd["patch_embedding_mask.weight"].shape[1],
                out_dim=sd["head.head.weight"].shape[0] // 4, eps=1e-6)


def load_transformer(scail_path: Path, device, dtype, lora_path: Path | None = None, lora_alpha: float = 1.0,
                     config: dict | None = None) -> SCAIL2Transformer:
    sd = read_dit_file(scail_path, device, dtype)
    for prefix in REPACK_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
            break
    check_is_scail2(sd, str(scail_path))
    if config is None:
        side = scail_path.with_name("config.json")
        config = json.loads(side.read_text()) if side.is_file() else infer_official_config(sd)
    if lora_path:
        n = merge_lora(sd, load_lora_file(lora_path), lora_alpha)
        log.info("merged LoRA %s (%d layers, alpha %g)", lora_path, n, lora_alpha)
    return SCAIL2Transformer.from_official(sd, config, device=device, dtype=dtype).eval()


def find_file(folder: Path, *names: str) -> Path | None:
    for name in names:
        for cand in (folder / name, folder / "umt5-xxl" / name):
            if cand.is_file():
                return cand
    clips = sorted(folder.glob(CLIP_GLOB)) if any("clip" in n for n in names) else []
    return clips[0] if clips else None


def load_pipeline(model: str = "scail2", *, ckpt_dir: str | os.PathLike | None = None,
                  scail_path: str | os.PathLike | None = None, device: str = "auto", dtype: str = "auto",
                  offload: str = "none", vram_budget_gb: float | None = None, lora_path: str | None = None,
                  lora_alpha: float = 1.0, seed: int = 0, speed: dict | None = None) -> SCAIL2Pipeline:
    """Build the pipeline: `model="tiny-random"` needs nothing; `"scail2"` needs the released folder and DiT file."""
    if model not in MODELS:
        raise InputError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if dev.startswith("cuda") else torch.float32
    else:
        torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    placement = Placement(dev, offload, vram_budget_gb)
    t0 = time.perf_counter()
    if model == "tiny-random":
        from scailflow.scail.tiny import TINY_LABEL, tiny_components

        parts = tiny_components(seed)
        if lora_path:
            raise InputError("--lora_path needs the real SCAIL-2 model, not tiny-random")
        pipe = SCAIL2Pipeline(**parts, placement=placement, dtype=torch.float32, label=TINY_LABEL)
    else:
        ckpt_dir = ckpt_dir or os.environ.get("SCAILFLOW_CKPT_DIR")
        scail_path = scail_path or os.environ.get("SCAILFLOW_SCAIL_PATH")
        if not ckpt_dir or not scail_path:
            raise InputError(f"no SCAIL-2 checkpoint configured: {DOWNLOAD_HINT}")
        check_dit_file(Path(scail_path))
        folder = Path(ckpt_dir)
        if not folder.is_dir():
            raise InputError(f"checkpoint folder not found: {folder}")
        vae_path = find_file(folder, VAE_FILE)
        t5_path = find_file(folder, T5_FILE)
        clip_path = find_file(folder, "models_clip_open-clip-xlm-roberta-large-vit-huge-14-onlyvisual.pth",
                              "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
        for what, p, name in (("VAE", vae_path, VAE_FILE), ("T5 encoder", t5_path, T5_FILE),
                              ("CLIP visual", clip_path, CLIP_GLOB)):
            if p is None:
                raise InputError(f"{what} weights not found: expected {folder / name}")
        tok_dir = folder / "umt5-xxl" if (folder / "umt5-xxl").is_dir() else folder
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        except Exception as e:  # noqa: BLE001
            raise InputError(f"cannot load the umt5-xxl tokenizer from {tok_dir}: {e}") from None
        load_dev = dev if offload == "none" else "cpu"
        transformer = load_transformer(Path(scail_path), load_dev, torch_dtype, lora_path and Path(lora_path),
                                       lora_alpha)
        vae = vae_from_wan_state_dict(torch_load_weights(vae_path))
        text_encoder = umt5_from_wan_state_dict(torch_load_weights(t5_path)).to(torch_dtype)
        image_encoder = clip_from_wan_state_dict(torch_load_weights(clip_path)).to(torch_dtype)
        pipe = SCAIL2Pipeline(transformer, vae, text_encoder, tokenizer, image_encoder, placement, torch_dtype,
                              label=f"SCAIL-2 ({Path(scail_path).name})")
    if speed:  # scail/speed.py's switchable speed-ups (fp8 swaps modules: before any offload hooks)
        from scailflow.scail.speed import apply_speedups

        speed = dict(speed)
        if speed.pop("vae_tiling", False):
            pipe.vae.enable_tiling()
        pipe.speedups = apply_speedups(pipe.transformer, **speed)
    placement.prepare({"transformer": pipe.transformer, "vae": pipe.vae, "text_encoder": pipe.text_encoder,
                       "image_encoder": pipe.image_encoder})
    pipe.load_seconds = time.perf_counter() - t0
    log.info("loaded %s on %s in %.1f s", pipe.label, dev, pipe.load_seconds)
    return pipe
