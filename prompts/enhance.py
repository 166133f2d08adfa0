"""The prompt enhancer: driving video + reference image + instruction -> a 90-140 word positive prompt.

Call 1 captions the driving video from evenly sampled frames; call 2 turns the reference image, the instruction,
that caption and few-shot examples into one paragraph describing the finished video.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from google.genai import types

from scailflow.errors import InputError
from scailflow.files import write_text_atomic

from . import cache
from .gemini import AnswerCheckError, Backoff, GeminiClient, redact
from .sampling import image_jpeg, jpeg_bytes, sample_video_frames
from .templates import (
    caption_problem,
    caption_request,
    check_mode,
    load_examples,
    normalize_answer,
    prompt_problem,
    prompt_request,
)

LOG = logging.getLogger("scailflow.prompts")

DEFAULT_MODEL = "gemini-2.5-flash"
KEY_ENV_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
BASE_URL_ENV = "GEMINI_BASE_URL"


class MissingKeyError(InputError):
    """No Gemini API key was given or found in the environment."""


@dataclass(frozen=True)
class PromptResult:
    prompt: str
    caption: str
    cached: bool
    calls: int  # HTTP requests made, retries included (0 on a cache hit)
    cache_key: str = ""


def resolve_api_key(explicit: str | None = None) -> str | None:
    """The key to use: `explicit`, else GEMINI_API_KEY, else GOOGLE_API_KEY; blank values count as absent."""
    for value in (explicit, *(os.environ.get(name) for name in KEY_ENV_VARS)):
        if value and value.strip():
            return value.strip()
    return None


def resolve_base_url(explicit: str | None = None) -> str | None:
    """`explicit`, else GEMINI_BASE_URL, else None (the SDK's default endpoint)."""
    value = explicit or os.environ.get(BASE_URL_ENV)
    return value.strip() if value and value.strip() else None


def _check_options(
    instruction: str, mode: str, model: str, temperature: float, num_frames: int, max_retries: int, timeout_s: float
) -> None:
    check_mode(mode)
    if not instruction or not instruction.strip():
        raise InputError("the prompt enhancer needs a non-empty instruction")
    if not model or not model.strip():
        raise InputError("model name is empty")
    if not (math.isfinite(temperature) and 0.0 <= temperature <= 2.0):
        raise InputError(f"temperature must be within 0-2, got {temperature}")
    if num_frames < 1:
        raise InputError(f"num_frames must be at least 1, got {num_frames}")
    if max_retries < 0:
        raise InputError(f"max_retries must be >= 0, got {max_retries}")
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise InputError(f"timeout_s must be positive, got {timeout_s}")


def _ask_checked(client: GeminiClient, parts: list, what: str, problem: Callable[[str], str | None]) -> str:
    """Ask once; if the answer fails `problem`, ask once more saying why; then give up with AnswerCheckError."""
    why = None
    for attempt in range(2):
        request = (
            parts
            if why is None
            else [*parts, f"Your previous answer was rejected: {why}. Answer again following every rule above."]
        )
        response = client.generate(request, what)
        text = normalize_answer(response.text)
        why = problem(text)
        if why is None:
            return text
        if not text:
            why = f"{why}{_finish_reason(response)}"
        LOG.warning("Gemini %s answer rejected (%s)%s", what, why, "; asking again" if attempt == 0 else "")
    raise AnswerCheckError(f"Gemini gave no usable {what} after 2 answers: {why}")


def _finish_reason(response: types.GenerateContentResponse) -> str:
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        return f" (blocked: {feedback.block_reason})"
    if response.candidates and response.candidates[0].finish_reason:
        return f" (finish reason: {response.candidates[0].finish_reason})"
    return ""


def _write_outputs(prompt: str, caption: str, output: Path | None, caption_out: Path | None) -> None:
    if output is not None:
        write_text_atomic(output, prompt + "\n")
        LOG.info("prompt written to %s", output)
    if caption_out is not None:
        write_text_atomic(caption_out, caption + "\n")
        LOG.info("caption written to %s", caption_out)


def enhance_prompt(
    video: Path,
    image: Path,
    instruction: str,
    *,
    mode: str = "replacement",
    model: str = DEFAULT_MODEL,
    temperature: float = 0.4,
    num_frames: int = 8,
    examples: Path | None = None,
    max_example_chars: int = 4000,
    api_key: str | None = None,
    base_url: str | None = None,
    output: Path | None = None,
    caption_out: Path | None = None,
    cache_dir: Path | None = None,
    max_retries: int = 4,
    timeout_s: float = 120,
    backoff_base_s: float = 1.0,
) -> PromptResult:
    """Caption `video` from `num_frames` evenly sampled frames, then write the positive prompt for `mode`.

    The key is `api_key`, else GEMINI_API_KEY / GOOGLE_API_KEY (MissingKeyError when none); `base_url`, else
    GEMINI_BASE_URL, overrides the endpoint. With `cache_dir`, a result for the same content (see
    prompt_cache_key) is returned without any call. `output` / `caption_out` are written atomically.
    Raises InputError for bad input (GeminiRequestError for a 4xx) and GeminiError for other API failures.
    """
    video, image = Path(video), Path(image)
    _check_options(instruction, mode, model, temperature, num_frames, max_retries, timeout_s)
    cache_key = cache.prompt_cache_key(
        video,
        image,
        instruction,
        examples,
        model,
        mode,
        num_frames=num_frames,
        temperature=temperature,
        max_example_chars=max_example_chars,
    )
    if cache_dir is not None:
        hit = cache.load(Path(cache_dir), cache_key)
        if hit is not None:
            LOG.info("prompt cache hit (%s), no Gemini call", cache_key[:12])
            _write_outputs(*hit, output, caption_out)
            return PromptResult(hit[0], hit[1], cached=True, calls=0, cache_key=cache_key)

    secret = resolve_api_key(api_key)
    if secret is None:
        raise MissingKeyError(f"no Gemini API key: set {' or '.join(KEY_ENV_VARS)} (or pass --api_key)")
    example_text = load_examples(examples, max_example_chars)
    indices, frames = sample_video_frames(video, num_frames)
    frame_parts = [types.Part.from_bytes(data=jpeg_bytes(f), mime_type="image/jpeg") for f in frames]
    image_part = types.Part.from_bytes(data=image_jpeg(image), mime_type="image/jpeg")
    endpoint = resolve_base_url(base_url)
    LOG.info(
        "prompt enhancer: %s mode, model %s, frames %s of %s%s",
        mode,
        model,
        indices,
        video.name,
        f", endpoint {redact(endpoint, secret)}" if endpoint else "",
    )

    backoff = Backoff(base_s=backoff_base_s)
    with GeminiClient(
        secret, model, temperature, base_url=endpoint, timeout_s=timeout_s, max_retries=max_retries, backoff=backoff
    ) as client:
        caption = _ask_checked(client, [*frame_parts, caption_request(len(frame_parts))], "caption", caption_problem)
        LOG.info("caption: %s", caption)
        prompt = _ask_checked(
            client, [image_part, prompt_request(mode, instruction, caption, example_text)], "prompt", prompt_problem
        )
        calls = client.calls
    LOG.info("prompt (%d words, %d calls): %s", len(prompt.split()), calls, prompt)

    _write_outputs(prompt, caption, output, caption_out)
    if cache_dir is not None:
        cache.store(Path(cache_dir), cache_key, prompt, caption, model, mode)
    return PromptResult(prompt, caption, cached=False, calls=calls, cache_key=cache_key)
