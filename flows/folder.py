"""The raw-folder contract: what a folder must hold, checked up front with one clear message per problem.

FOLDER/
  ref.jpg|png|webp         the reference character (required)
  ref_*.jpg|png|webp       extra references (optional; ref_bg* = a clean background)
  driving.mp4              the driving video, or the only video in the folder
  prompt.txt               optional positive prompt
  job.yaml                 optional per-folder options (see flows/config.py)
  scailflow/               outputs (default; --out DIR to put them elsewhere)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from scailflow.errors import InputError
from scailflow.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, probe_video, read_image

OUTPUT_DIRNAME = "scailflow"


@dataclass(frozen=True)
class RawFolder:
    root: Path
    ref: Path
    driving: Path
    # (image, kind), kind "background" or "character:0"
    extra_refs: tuple[tuple[Path, str], ...] = field(default_factory=tuple)
    prompt_file: Path | None = None

    @property
    def name(self) -> str:
        return self.root.name


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
    )


def scan_folder(folder: str | os.PathLike, check_media: bool = True) -> RawFolder:
    """Find the reference, the driving video and the optional files; InputError names what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    images = _files(folder, IMAGE_SUFFIXES)
    refs = [p for p in images if p.stem.lower() == "ref"]
    if not refs:
        raise InputError(f"{folder}: no reference image (expected ref.jpg, ref.png or ref.webp)")
    if len(refs) > 1:
        raise InputError(f"{folder}: several reference images ({', '.join(p.name for p in refs)}); keep one")
    extras = tuple(
        (p, "background" if p.stem.lower().startswith("ref_bg") else "character:0")
        for p in images
        if p.stem.lower().startswith("ref_") and not p.stem.lower().startswith("ref_mask")
    )
    videos = _files(folder, VIDEO_SUFFIXES)
    named = [p for p in videos if p.name.lower() == "driving.mp4"]
    if named:
        driving = named[0]
    elif len(videos) == 1:
        driving = videos[0]
    elif not videos:
        raise InputError(f"{folder}: no driving video (expected driving.mp4 or a single video file)")
    else:
        raise InputError(
            f"{folder}: {len(videos)} videos ({', '.join(p.name for p in videos)}) and no driving.mp4: "
            "name the driving video driving.mp4"
        )
    prompt = folder / "prompt.txt"
    raw = RawFolder(folder, refs[0], driving, extras, prompt if prompt.is_file() else None)
    if check_media:
        read_image(raw.ref)
        for p, _ in raw.extra_refs:
            read_image(p)
        info = probe_video(raw.driving)
        if info.frames < 1:
            raise InputError(f"{raw.driving}: the video has no frames")
    return raw


def find_folders(root: str | os.PathLike) -> list[Path]:
    """Folders directly under `root` that hold a reference image (sorted by name)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"not a folder: {root}")
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and any(q.stem.lower() == "ref" and q.suffix.lower() in IMAGE_SUFFIXES for q in p.iterdir())
    )


def output_dir(raw: RawFolder, out: str | os.PathLike | None) -> Path:
    return Path(out) if out else raw.root / OUTPUT_DIRNAME
