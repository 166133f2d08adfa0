"""Content-addressed cache of enhanced prompts: one JSON file per key in a directory."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from scailflow.errors import InputError
from scailflow.files import file_sha256, write_text_atomic

from .templates import DEFAULT_EXAMPLES, TEMPLATE_VERSION, check_mode

LOG = logging.getLogger("scailflow.prompts")


def _content_hash(path: str | os.PathLike, what: str) -> str:
    try:
        return file_sha256(path)
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror or e}") from None


def prompt_cache_key(
    video: str | os.PathLike,
    image: str | os.PathLike,
    instruction: str,
    examples: str | os.PathLike | None,
    model: str,
    mode: str,
    *,
    num_frames: int = 8,
    temperature: float = 0.4,
    max_example_chars: int = 4000,
) -> str:
    """sha256 over the inputs' content hashes, the instruction, model, mode, sampling settings and
    TEMPLATE_VERSION. File paths and the API key take no part: moved or renamed inputs still hit."""
    fields = {
        "video": _content_hash(video, "video"),
        "image": _content_hash(image, "image"),
        "examples": _content_hash(examples if examples is not None else DEFAULT_EXAMPLES, "examples file"),
        "instruction": instruction.strip(),
        "model": model,
        "mode": check_mode(mode),
        "num_frames": int(num_frames),
        "temperature": float(temperature),
        "max_example_chars": int(max_example_chars),
        "template_version": TEMPLATE_VERSION,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def load(cache_dir: Path, key: str) -> tuple[str, str] | None:
    """(prompt, caption) stored under `key`, or None when absent or unreadable."""
    path = cache_dir / f"{key}.json"
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        prompt, caption = entry["prompt"], entry["caption"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        LOG.warning("ignoring unreadable prompt cache entry %s (%s)", path, e.__class__.__name__)
        return None
    if not isinstance(prompt, str) or not isinstance(caption, str) or not prompt:
        LOG.warning("ignoring malformed prompt cache entry %s", path)
        return None
    return prompt, caption


def store(cache_dir: Path, key: str, prompt: str, caption: str, model: str, mode: str) -> Path:
    """Write the entry for `key` atomically."""
    entry = {"prompt": prompt, "caption": caption, "model": model, "mode": mode, "template_version": TEMPLATE_VERSION}
    return write_text_atomic(cache_dir / f"{key}.json", json.dumps(entry, indent=1, ensure_ascii=False) + "\n")
