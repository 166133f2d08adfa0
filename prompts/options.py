"""The prompt stage's options (job.yaml `prompt_enhancer:`; `instruction:` may also sit at the top level)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from scailflow.options import FileOption, Flag, Options

DEFAULT_PROMPT = (
    "A person performs the motion of the driving video with natural, fluid movement, consistent "
    "identity, clothing and lighting, in a clean, well-lit scene."
)


class PromptOptions(Options):
    instruction: Annotated[str | None, Flag("--instruction")] = Field(
        None, description="a short instruction for the Gemini prompt enhancer (turns it on when a key is set)"
    )
    # the flags below are the prompt command's (`scailflow prompt`, the official prompt_enhancer.py's spellings);
    # in a job they are job.yaml's `prompt_enhancer:` keys
    model: Annotated[str, Flag("--model", command="prompt")] = Field(
        "gemini-2.5-flash", pattern=r"\S", description="Gemini model"
    )
    temperature: Annotated[float, Flag("--temperature", command="prompt")] = Field(
        0.4, ge=0, le=2, description="sampling temperature"
    )
    num_frames: Annotated[int, Flag("--num_frames", command="prompt")] = Field(
        8, ge=1, le=64, description="driving frames shown to Gemini (sampled evenly) for the caption"
    )
    examples: Annotated[str | None, Flag("--examples", command="prompt"), FileOption()] = Field(
        None,
        description="few-shot example prompts, blank-line separated (the command: ./prompt_examples.txt as the "
        "official helper when it is there; else the packaged file)",
    )
    fallback_to_prompt_file: bool = Field(True, description="on an enhancer failure use prompt.txt / the default")
    default_prompt: str = Field(DEFAULT_PROMPT, description="used when there is no prompt.txt and no enhancer")
