"""Prompt enhancer (Gemini through google-genai): a driving video, a reference image and a short instruction
become the positive prompt SCAIL-2 is conditioned on. No Prefect here; the flow's prompt task calls `make_prompt`."""

from scailflow.lazy import exports

__getattr__, __dir__, __all__ = exports(
    __name__,
    {
        "stage": ("PromptStageResult", "make_prompt", "output_paths"),
        "cache": ("prompt_cache_key",),
        "enhance": (
            "DEFAULT_MODEL",
            "GeminiAccess",
            "MissingKeyError",
            "PromptResult",
            "enhance_prompt",
            "resolve_api_key",
            "resolve_base_url",
        ),
        "gemini": ("AnswerCheckError", "GeminiError", "GeminiRequestError", "GeminiUnavailableError", "is_transient"),
        "options": ("PromptOptions",),
        "sampling": ("sample_frame_indices",),
        "templates": ("DEFAULT_EXAMPLES", "TEMPLATE_VERSION"),
    },
)
