"""Prompt stage: the positive prompt (prompts.make_prompt decides: Gemini, job.yaml, prompt.txt or the default).
The API key never enters a parameter, cache key, log or artifact."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task

from scailflow.prompts.options import PromptOptions
from scailflow.tasks.common import cache_key, stage_key, stage_task_options, true_key, write_manifest

if TYPE_CHECKING:
    from scailflow.prompts.stage import PromptStageResult

VERSION = "prompt-2"
SECRET_BLOCK_ENV = "SCAILFLOW_GEMINI_SECRET_BLOCK"  # name of a Prefect Secret block holding the key


def api_key() -> str | None:
    """GEMINI_API_KEY / GOOGLE_API_KEY, else the Prefect Secret block named by SCAILFLOW_GEMINI_SECRET_BLOCK."""
    from scailflow.prompts import resolve_api_key

    key = resolve_api_key()
    block = os.environ.get(SECRET_BLOCK_ENV)
    if key is None and block:
        from prefect.blocks.system import Secret

        key = Secret.load(block).get()
    return key


def outputs(out_dir: str) -> list[Path]:
    from scailflow.prompts import output_paths

    return output_paths(out_dir)


def _key(p: dict) -> str:
    opts: PromptOptions = p["opts"]
    enhancing = bool(opts.instruction) and p["key_available"]
    reads = [p["prompt_file"]] + ([p["driving"], p["ref"], opts.examples] if enhancing else [])
    params = {
        "opts": opts if enhancing else {"default_prompt": opts.default_prompt},
        "mode": p["mode"],
        "inline": p["inline_prompt"],
        "enhancing": enhancing,
    }
    base = stage_key("prompt", VERSION, p["out_dir"], reads, params)
    return true_key(p["out_dir"], "prompt", base, p.get("rerun", False))


@task(name="prompt", cache_key_fn=cache_key(_key), **stage_task_options(retries=2))
def prompt_task(
    driving: str,
    ref: str,
    out_dir: str,
    mode: str,
    opts: PromptOptions,
    prompt_file: str | None,
    inline_prompt: str | None,
    key_available: bool,
    rerun: bool = False,
) -> PromptStageResult:
    """Decide the prompt and write it to out_dir/prompt.txt; returns its path and where it came from.
    `rerun`: run even if cached."""
    from scailflow.prompts import make_prompt
    from scailflow.tasks.progress import stage

    t0 = time.perf_counter()
    with stage("prompt", out_dir):
        result = make_prompt(
            Path(driving),
            Path(ref),
            Path(out_dir),
            mode,
            opts,
            Path(prompt_file) if prompt_file else None,
            inline_prompt,
            api_key() if key_available else None,
        )
    write_manifest(out_dir, "prompt", [result.prompt_file])
    return result.model_copy(update={"seconds": round(time.perf_counter() - t0, 3)})
