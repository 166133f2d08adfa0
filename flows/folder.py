"""The raw-folder contract: what a folder must hold, checked up front with one clear message per problem.

FOLDER/
  ref.jpg|png|webp         the reference character (required)
  ref_*.jpg|png|webp       extra references (optional; ref_bg* = a clean background)
  driving.mp4              the driving video, or the only video in the folder
  prompt.txt               optional positive prompt
  job.yaml                 optional per-folder options (see flows/config.py)
  scailflow/               outputs (default; --out DIR to put them elsewhere)

Folders may come from strangers: every file a folder holds or names must resolve inside it (or inside a directory
the operator allowed in SCAILFLOW_ALLOW_PATHS), and the outputs never mix with the inputs (`folder_file`,
`output_dir`: the one place each rule is decided).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from scailflow.errors import InputError
from scailflow.files import read_text
from scailflow.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, probe_video, read_image

OUTPUT_DIRNAME = "scailflow"
ALLOW_ENV = "SCAILFLOW_ALLOW_PATHS"  # directories (os.pathsep-separated) folders may name files in
MAX_PROMPT_BYTES = 64 * 1024


def allowed_dirs() -> list[Path]:
    """Directories the operator lets folders name files in (SCAILFLOW_ALLOW_PATHS), resolved."""
    value = os.environ.get(ALLOW_ENV, "")
    return [Path(os.path.expanduser(d)).resolve() for d in value.split(os.pathsep) if d.strip()]


def folder_file(folder: Path, value: str | os.PathLike, what: str) -> Path:
    """The one rule for a file a folder holds or names (job.yaml paths, its images, video and text): it must
    resolve, symlinks followed, inside the folder or a directory the operator allowed. Returns the real path;
    relative values are relative to the folder."""
    p = Path(os.path.expanduser(value))
    p = p if p.is_absolute() else Path(folder) / p
    real = p.resolve()
    roots = [Path(folder).resolve(), *allowed_dirs()]
    if not any(real == r or real.is_relative_to(r) for r in roots):
        shown = f"{value}" if str(value) == str(real) else f"{value} (-> {real})"
        raise InputError(
            f"{what}: {shown} is outside the folder {folder}: a folder may only use files inside it "
            f"(name the file on the command line or in pipelines.yaml, or allow its directory with {ALLOW_ENV})"
        )
    return real


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
    for p in (raw.ref, raw.driving, *(q for q, _ in raw.extra_refs), raw.prompt_file, folder / "job.yaml"):
        if p is not None and (p.exists() or p.is_symlink()):
            folder_file(folder, p.name, str(p))
    if raw.prompt_file is not None:
        read_text(raw.prompt_file, "prompt file", MAX_PROMPT_BYTES)  # undecodable text fails now, naming it
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
    """Where a folder's outputs go: FOLDER/scailflow, or `out`. Inputs are never written: an output folder equal
    to the input folder, inside it (other than FOLDER/scailflow) or holding it is refused, and the default one may
    not hold links leaving the folder (a stranger's folder would redirect our writes)."""
    root = raw.root.resolve()
    default = raw.root / OUTPUT_DIRNAME
    if not out:
        _no_links_out(raw.root, default)
        return default
    real = Path(out).resolve()
    if real == root or (real.is_relative_to(root) and not real.is_relative_to(default.resolve())):
        raise InputError(
            f"output folder {out} is {'the' if real == root else 'inside the'} input folder {raw.root}: outputs "
            f"would mix with the inputs; choose a folder outside it (or leave --out out: {default})"
        )
    if root.is_relative_to(real):
        raise InputError(f"output folder {out} holds the input folder {raw.root}: choose a folder outside it")
    if real.is_relative_to(root):
        _no_links_out(raw.root, default)
    return Path(out)


def _no_links_out(folder: Path, out_dir: Path) -> None:
    if not (out_dir.exists() or out_dir.is_symlink()):
        return
    folder_file(folder, out_dir.absolute(), f"{out_dir} (the output folder)")
    for dirpath, dirnames, filenames in os.walk(out_dir):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                folder_file(folder, p.absolute(), str(p))
