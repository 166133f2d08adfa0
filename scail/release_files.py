"""Where the released SCAIL-2 folder keeps each weight file (torch-free, so a command can find them before it
imports torch)."""

from __future__ import annotations

import os
from pathlib import Path

from scailflow.errors import InputError

DOWNLOAD_HINT = (
    "download the SCAIL-2 release (Wan2.1_VAE.pth, umt5-xxl/, the CLIP visual .pth, model/) and convert "
    "its DiT once with `scailflow convert`, then pass --ckpt_dir DIR --scail_path FILE.safetensors "
    "(or set SCAILFLOW_CKPT_DIR / SCAILFLOW_SCAIL_PATH); `--model tiny-random` checks an installation "
    "without weights (its output is noise)"
)
VAE_FILE = "Wan2.1_VAE.pth"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
CLIP_GLOB = "models_clip_*.pth"
CLIP_FILES = (
    "models_clip_open-clip-xlm-roberta-large-vit-huge-14-onlyvisual.pth",
    "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
)
ENCODERS = (  # what, the names it may have (find_file), the name an error shows; in load order
    ("VAE", (VAE_FILE,), VAE_FILE),
    ("T5 encoder", (T5_FILE,), T5_FILE),
    ("CLIP visual", CLIP_FILES, CLIP_GLOB),
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
        found += [p for _, names, _ in ENCODERS if (p := find_file(folder, *names))]
    return found


def model_weight_files(opts) -> list[Path]:
    """`weight_files` of a ModelOptions (its paths, else SCAILFLOW_CKPT_DIR / SCAILFLOW_SCAIL_PATH); none for the
    tiny random model."""
    return [] if opts.model == "tiny-random" else weight_files(*configured(opts))


def configured(opts) -> tuple[str | None, str | None]:
    """(ckpt_dir, scail_path) from the options, else SCAILFLOW_CKPT_DIR / SCAILFLOW_SCAIL_PATH."""
    return (
        opts.ckpt_dir or os.environ.get("SCAILFLOW_CKPT_DIR"),
        opts.scail_path or os.environ.get("SCAILFLOW_SCAIL_PATH"),
    )


def check_dit_path(path: Path) -> None:
    """The DiT file exists and is safetensors (its keys are checked by the load)."""
    if not path.is_file():
        raise InputError(f"SCAIL-2 DiT file not found: {path}")
    if path.suffix != ".safetensors":
        raise InputError(
            f"{path}: the DiT must be a .safetensors file (convert the training checkpoint with "
            "`scailflow convert --scail-dir DIR --save-path FILE.safetensors`)"
        )


def encoder_files(ckpt_dir: str | os.PathLike) -> tuple[Path, Path, Path]:
    """(VAE, T5, CLIP) of the release folder, or one line naming what is missing."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        raise InputError(f"checkpoint folder not found: {folder}")
    found = []
    for what, names, shown in ENCODERS:
        p = find_file(folder, *names)
        if p is None:
            raise InputError(f"{what} weights not found: expected {folder / shown}")
        found.append(p)
    return found[0], found[1], found[2]


def check_release(opts) -> None:
    """Before torch is imported: one line when no checkpoint is configured (and none is in the Hugging Face cache) or
    the DiT file is missing or not safetensors; nothing for the tiny random model. The load checks the rest in its
    order (the DiT's keys, then the encoders' files)."""
    if opts.model == "tiny-random":
        return
    ckpt_dir, scail_path = configured(opts)
    if not ckpt_dir or not scail_path:
        from scailflow.scail.hub import find_release

        if find_release() is None:
            raise InputError(f"no SCAIL-2 checkpoint configured: {DOWNLOAD_HINT}")
    if scail_path:
        check_dit_path(Path(scail_path))
