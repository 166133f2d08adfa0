"""The prompt stage as one call: the positive prompt from Gemini (when there is an instruction and a key), else the
job's prompt, prompt.txt or the default; written to OUT/prompt.txt. No Prefect in here."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from scailflow.files import read_text, write_text_atomic
from scailflow.layout import CAPTION, PROMPT

from .enhance import GeminiAccess, enhance_prompt
from .gemini import GeminiError
from .options import PromptOptions

log = logging.getLogger("scailflow.prompts")

PROMPT_FILE = PROMPT
CAPTION_FILE = CAPTION
CACHE_DIR = ".prompt_cache"


class PromptStageResult(BaseModel):
    """What `make_prompt` wrote: the prompt file and where its text came from (the Gemini model, "job.yaml prompt",
    "prompt.txt" or "default prompt"). Crosses the task boundary as is; `seconds` is set by the task."""

    model_config = ConfigDict(frozen=True)

    prompt_file: Path
    source: str
    seconds: float = 0.0


def output_paths(out_dir: str | Path) -> list[Path]:
    return [Path(out_dir) / PROMPT_FILE]


def make_prompt(
    driving: Path,
    ref: Path,
    out_dir: Path,
    mode: str,
    opts: PromptOptions,
    prompt_file: Path | None,
    inline_prompt: str | None,
    api_key: str | None,
) -> PromptStageResult:
    """Decide the prompt and write it to out_dir/prompt.txt."""
    out = Path(out_dir) / PROMPT_FILE
    fallback = inline_prompt or (read_prompt_file(prompt_file) if prompt_file else None)
    source = "job.yaml prompt" if inline_prompt else ("prompt.txt" if prompt_file else "default prompt")
    if opts.instruction and api_key:
        try:
            result = enhance_prompt(
                driving,
                ref,
                opts,
                mode=mode,
                access=GeminiAccess(api_key=api_key),
                output=out,
                caption_out=Path(out_dir) / CAPTION_FILE,
                cache_dir=Path(out_dir) / CACHE_DIR,
            )
            log.info("prompt written by %s (%d words)", opts.model, len(result.prompt.split()))
            return PromptStageResult(prompt_file=out, source=opts.model)
        except GeminiError as e:
            if not (opts.fallback_to_prompt_file and fallback):
                raise
            log.warning("prompt enhancer failed (%s); using %s", e, source)
    elif opts.instruction:
        log.info("no Gemini key (GEMINI_API_KEY, GOOGLE_API_KEY or a Prefect Secret block): using %s", source)
    else:
        log.info("no instruction for the prompt enhancer: using %s", source)
    write_text_atomic(out, (fallback or opts.default_prompt) + "\n")
    return PromptStageResult(prompt_file=out, source=source)


def read_prompt_file(path: Path) -> str:
    """A prompt file as text; one that is not UTF-8 (or unreadable) is an InputError naming it, never retried."""
    return read_text(path, "prompt file").strip()
