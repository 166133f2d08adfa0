"""Where the released SCAIL-2 folder keeps each weight file (torch-free, so a command can find them before it
imports torch)."""

from __future__ import annotations

import os
from pathlib import Path

VAE_FILE = "Wan2.1_VAE.pth"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
CLIP_GLOB = "models_clip_*.pth"
CLIP_FILES = (
    "models_clip_open-clip-xlm-roberta-large-vit-huge-14-onlyvisual.pth",
    "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
)


def find_file(folder: Path, *names: str) -> Path | None:
    """The first of `names` in the folder or its umt5-xxl/ subfolder; for CLIP names, any models_clip_*.pth."""
    for name in names:
        for cand in (folder / name, folder / "umt5-xxl" / name):
            if cand.is_file():
                return cand
    clips = sorted(folder.glob(CLIP_GLOB)) if any("clip" in n for n in names) else []
    return clips[0] if clips else None


def weight_files(ckpt_dir: str | os.PathLike | None, scail_path: str | os.PathLike | None) -> list[Path]:
    """The weight files a load of this release reads, in the order it reads them (DiT, VAE, T5, CLIP); those that
    are not there are left out (the load itself says what is missing)."""
    found = [Path(scail_path)] if scail_path and Path(scail_path).is_file() else []
    if ckpt_dir and Path(ckpt_dir).is_dir():
        folder = Path(ckpt_dir)
        found += [
            p for p in (find_file(folder, VAE_FILE), find_file(folder, T5_FILE), find_file(folder, *CLIP_FILES)) if p
        ]
    return found


def model_weight_files(opts) -> list[Path]:
    """`weight_files` of a ModelOptions (its paths, else SCAILFLOW_CKPT_DIR / SCAILFLOW_SCAIL_PATH); none for the
    tiny random model."""
    if opts.model == "tiny-random":
        return []
    return weight_files(
        opts.ckpt_dir or os.environ.get("SCAILFLOW_CKPT_DIR"),
        opts.scail_path or os.environ.get("SCAILFLOW_SCAIL_PATH"),
    )
