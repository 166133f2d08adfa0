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
from .options import PromptOptions
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

DEFAULT_MODEL = PromptOptions.model_fields["model"].default
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


@dataclass(frozen=True)
class GeminiAccess:
    """How to reach Gemini for one call: the key (else GEMINI_API_KEY / GOOGLE_API_KEY), the endpoint (else
    GEMINI_BASE_URL, else Google's), the per-request timeout, and retries of transient failures with backoff."""

    api_key: str | None = None
    base_url: str | None = None
    timeout_s: float = 120
    max_retries: int = 4
    backoff_base_s: float = 1.0

    def __post_init__(self):
        if self.max_retries < 0:
            raise InputError(f"max_retries must be >= 0, got {self.max_retries}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise InputError(f"timeout_s must be positive, got {self.timeout_s}")


def _check_call(opts: PromptOptions, mode: str) -> None:
    """What the options cannot check alone: an instruction is optional in a job, not here; the mode."""
    check_mode(mode)
    if not opts.instruction or not opts.instruction.strip():
        raise InputError("the prompt enhancer needs a non-empty instruction")


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


def _cache_key(video: Path, image: Path, opts: PromptOptions, mode: str, max_example_chars: int) -> str:
    return cache.prompt_cache_key(
        video,
        image,
        opts.instruction,
        opts.examples,
        opts.model,
        mode,
        num_frames=opts.num_frames,
        temperature=opts.temperature,
        max_example_chars=max_example_chars,
    )


def _ask_gemini(
    client: GeminiClient, frame_parts: list, image_part, opts: PromptOptions, mode: str, example_text: str
) -> tuple[str, str]:
    """Call 1: caption the driving frames. Call 2: the prompt from the reference, instruction, caption, examples."""
    caption = _ask_checked(client, [*frame_parts, caption_request(len(frame_parts))], "caption", caption_problem)
    LOG.info("caption: %s", caption)
    request = prompt_request(mode, opts.instruction, caption, example_text)
    return _ask_checked(client, [image_part, request], "prompt", prompt_problem), caption


def enhance_prompt(
    video: Path,
    image: Path,
    opts: PromptOptions,
    *,
    mode: str = "replacement",
    access: GeminiAccess = GeminiAccess(),
    output: Path | None = None,
    caption_out: Path | None = None,
    cache_dir: Path | None = None,
    max_example_chars: int = 4000,
) -> PromptResult:
    """Caption `video` from `opts.num_frames` evenly sampled frames, then write the positive prompt for `mode`.

    `opts.instruction` is required here. The key and endpoint come from `access` (MissingKeyError when there is no
    key). With `cache_dir`, a result for the same content (see prompt_cache_key) is returned without any call.
    `output` / `caption_out` are written atomically. Raises InputError for bad input (GeminiRequestError for a
    4xx) and GeminiError for other API failures.
    """
    video, image = Path(video), Path(image)
    # 1. Check the call (the options checked themselves when they were made)
    _check_call(opts, mode)

    # 2. The same content asked before: its answer, no call
    cache_key = _cache_key(video, image, opts, mode, max_example_chars)
    if cache_dir is not None:
        hit = cache.load(Path(cache_dir), cache_key)
        if hit is not None:
            LOG.info("prompt cache hit (%s), no Gemini call", cache_key[:12])
            _write_outputs(*hit, output, caption_out)
            return PromptResult(hit[0], hit[1], cached=True, calls=0, cache_key=cache_key)

    # 3. The key, the examples, the sampled frames and the reference as request parts
    secret = resolve_api_key(access.api_key)
    if secret is None:
        raise MissingKeyError(f"no Gemini API key: set {' or '.join(KEY_ENV_VARS)} (or pass --api_key)")
    example_text = load_examples(opts.examples, max_example_chars)
    indices, frames = sample_video_frames(video, opts.num_frames)
    frame_parts = [types.Part.from_bytes(data=jpeg_bytes(f), mime_type="image/jpeg") for f in frames]
    image_part = types.Part.from_bytes(data=image_jpeg(image), mime_type="image/jpeg")
    endpoint = resolve_base_url(access.base_url)
    LOG.info(
        "prompt enhancer: %s mode, model %s, frames %s of %s%s",
        mode,
        opts.model,
        indices,
        video.name,
        f", endpoint {redact(endpoint, secret)}" if endpoint else "",
    )

    # 4. Caption, then prompt
    with GeminiClient(
        secret,
        opts.model,
        opts.temperature,
        base_url=endpoint,
        timeout_s=access.timeout_s,
        max_retries=access.max_retries,
        backoff=Backoff(base_s=access.backoff_base_s),
    ) as client:
        prompt, caption = _ask_gemini(client, frame_parts, image_part, opts, mode, example_text)
        calls = client.calls
    LOG.info("prompt (%d words, %d calls): %s", len(prompt.split()), calls, prompt)

    # 5. Write the outputs and remember the answer
    _write_outputs(prompt, caption, output, caption_out)
    if cache_dir is not None:
        cache.store(Path(cache_dir), cache_key, prompt, caption, opts.model, mode)
    return PromptResult(prompt, caption, cached=False, calls=calls, cache_key=cache_key)
