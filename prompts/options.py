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
    model: str = Field("gemini-2.5-flash", description="Gemini model")
    temperature: float = Field(0.4, ge=0, le=2)
    num_frames: int = Field(8, ge=1, le=64, description="driving frames shown to Gemini")
    examples: Annotated[str | None, FileOption()] = Field(None, description="few-shot examples file")
    fallback_to_prompt_file: bool = Field(True, description="on an enhancer failure use prompt.txt / the default")
    default_prompt: str = Field(DEFAULT_PROMPT, description="used when there is no prompt.txt and no enhancer")
