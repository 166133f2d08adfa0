"""Prompt enhancer (Gemini through google-genai): a driving video, a reference image and a short instruction
become the positive prompt SCAIL-2 is conditioned on. No Prefect here; the flow layer wraps `enhance_prompt`."""
from .cache import prompt_cache_key
from .enhance import (DEFAULT_MODEL, MissingKeyError, PromptResult, enhance_prompt, resolve_api_key,
                      resolve_base_url)
from .gemini import AnswerCheckError, GeminiError, GeminiRequestError, GeminiUnavailableError, is_transient
from .sampling import sample_frame_indices
from .templates import DEFAULT_EXAMPLES, TEMPLATE_VERSION

__all__ = [
    "AnswerCheckError", "DEFAULT_EXAMPLES", "DEFAULT_MODEL", "GeminiError", "GeminiRequestError",
    "GeminiUnavailableError", "MissingKeyError", "PromptResult", "TEMPLATE_VERSION", "enhance_prompt",
    "is_transient", "prompt_cache_key", "resolve_api_key", "resolve_base_url", "sample_frame_indices",
]
