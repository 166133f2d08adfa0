"""Prompt stage: the positive prompt, from Gemini when the job has an instruction and a key, else prompt.txt
or the default. Writes `prompt.txt` (and `caption.txt`) in the output folder; the API key never enters a
parameter, cache key, log or artifact."""
from __future__ import annotations

import os
from pathlib import Path

from prefect import task

from scailflow.tasks.common import cache_key, stage_key, stage_logger, stage_task_options

VERSION = "prompt-1"
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


def _key(p: dict) -> str:
    cfg = p["prompt_cfg"]
    enhancing = bool(cfg.get("instruction")) and p["key_available"]
    reads = [p["prompt_file"]] + ([p["driving"], p["ref"], cfg.get("examples")] if enhancing else [])
    params = {"cfg": cfg if enhancing else {"default_prompt": cfg["default_prompt"]}, "mode": p["mode"],
              "inline": p["inline_prompt"], "enhancing": enhancing}
    return stage_key("prompt", VERSION, p["out_dir"], reads, params)


def outputs(out_dir: str) -> list[Path]:
    return [Path(out_dir) / "prompt.txt"]


@task(name="prompt", cache_key_fn=cache_key(_key), **stage_task_options(retries=3))
def prompt_task(driving: str, ref: str, out_dir: str, mode: str, prompt_cfg: dict, prompt_file: str | None,
                inline_prompt: str | None, key_available: bool) -> dict:
    """Decide the prompt and write it to out_dir/prompt.txt; returns its path and where it came from."""
    from scailflow.files import write_text_atomic

    log = stage_logger("prompts")
    out = Path(out_dir) / "prompt.txt"
    fallback = inline_prompt or (Path(prompt_file).read_text(encoding="utf-8").strip() if prompt_file else None)
    source = "job.yaml prompt" if inline_prompt else ("prompt.txt" if prompt_file else "default prompt")
    instruction = prompt_cfg.get("instruction")
    if instruction and key_available:
        from scailflow.prompts import GeminiError, enhance_prompt

        try:
            result = enhance_prompt(Path(driving), Path(ref), instruction, mode=mode, model=prompt_cfg["model"],
                                    temperature=prompt_cfg["temperature"], num_frames=prompt_cfg["num_frames"],
                                    examples=Path(prompt_cfg["examples"]) if prompt_cfg.get("examples") else None,
                                    api_key=api_key(), output=out, caption_out=Path(out_dir) / "caption.txt",
                                    cache_dir=Path(out_dir) / ".prompt_cache")
            log.info("prompt written by %s (%d words)", prompt_cfg["model"], len(result.prompt.split()))
            return {"prompt_file": str(out), "source": prompt_cfg["model"]}
        except GeminiError as e:
            if not (prompt_cfg.get("fallback_to_prompt_file") and fallback):
                raise
            log.warning("prompt enhancer failed (%s); using %s", e, source)
    elif instruction:
        log.info("no Gemini key (GEMINI_API_KEY, GOOGLE_API_KEY or a Prefect Secret block): using %s", source)
    else:
        log.info("no instruction for the prompt enhancer: using %s", source)
    write_text_atomic(out, (fallback or prompt_cfg["default_prompt"]) + "\n")
    return {"prompt_file": str(out), "source": source}
