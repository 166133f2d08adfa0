"""One Gemini generateContent call through google-genai, with our own retries and key-free errors.

The SDK's own retries are left off (no HttpRetryOptions) so that every attempt, wait and failure passes through
here: transient failures (429, 408, 5xx, timeouts, dropped connections) are retried with exponential backoff and
full jitter; any other 4xx fails at once. No message leaving this module contains the API key, and raised errors
carry no reference to the SDK exception (which holds the raw response).
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from scailflow.errors import InputError, RetriedError

LOG = logging.getLogger("scailflow.prompts")

API_VERSION = "v1beta"
TRANSIENT_4XX = frozenset({408, 429})  # request timeout, rate limit; every 5xx is transient too


def _transport_modules() -> list:
    # google-genai sends through httpx2 (its fork of httpx, other class objects) or httpx, by configuration.
    found = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            pass
    return found


_TRANSPORT = _transport_modules()
_TRANSPORT_ERRORS = tuple(m.HTTPError for m in _TRANSPORT)
_TRANSIENT_TRANSPORT = tuple(
    getattr(m, n) for m in _TRANSPORT for n in ("TimeoutException", "NetworkError", "RemoteProtocolError")
)


class GeminiError(RetriedError):
    """The Gemini API failed for good (retries spent, or an unusable answer). The message never holds the key."""

    transient = False

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class GeminiUnavailableError(GeminiError):
    """Retries spent on 429/5xx/timeouts: the service may heal later, so a later retry is worth it."""

    transient = True


class GeminiRequestError(GeminiError, InputError):
    """A 4xx the service will keep giving (bad key, bad request, unknown model): fix the input, do not retry."""


class AnswerCheckError(GeminiError):
    """The model answered twice with text that fails the checks (empty, wrong length, banned wording)."""


# between two characters of an echoed key: whitespace (a wrapped or split line), raw or escaped
_GAP = r"(?:\s|\\[nrt]|(?i:%(?:20|09|0a|0d))|\+)*"


def _char_forms(c: str) -> str:
    """A regex for one character of the key as an echo may spell it: itself, percent-encoded (any case), JSON- or
    Python-escaped (\\uXXXX, \\/, \\xXX) or as an HTML entity."""
    code = ord(c)
    forms = {
        re.escape(c),
        f"(?i:%{code:02x})",
        f"(?i:\\\\u{code:04x})",
        f"(?i:\\\\x{code:02x})",
        f"&#{code};",
        f"(?i:&#x{code:x};)",
    }
    if c in '/"':
        forms.add(re.escape("\\" + c))
    if c == " ":
        forms.add(r"\+")
    return "(?:" + "|".join(sorted(forms)) + ")"


@functools.lru_cache(maxsize=8)
def _secret_pattern(secret: str) -> re.Pattern:
    return re.compile(_GAP.join(_char_forms(c) for c in secret))


def redact(text: str, secret: str | None) -> str:
    """`text` with the key replaced by ***: verbatim, URL-encoded, JSON/HTML-escaped, or split by whitespace."""
    if not secret:
        return text
    return _secret_pattern(secret).sub("***", text.replace(secret, "***"))


def is_transient(exc: BaseException) -> bool:
    """Whether retrying later could heal `exc` (rate limits, server errors, timeouts); False for bad input."""
    if isinstance(exc, GeminiError):
        return exc.transient
    if isinstance(exc, genai_errors.APIError):
        return exc.code in TRANSIENT_4XX or (isinstance(exc.code, int) and exc.code >= 500)
    return isinstance(exc, _TRANSIENT_TRANSPORT)


def _describe(exc: BaseException, secret: str, limit: int = 600) -> str:
    """One line about an SDK/transport failure, key redacted (before shortening, which could split it)."""
    if isinstance(exc, genai_errors.APIError):
        status = f" {exc.status}" if exc.status else ""
        text = f"HTTP {exc.code}{status}: {exc.message or exc.details}"
    elif isinstance(exc, json.JSONDecodeError):
        text = f"the answer is not JSON: {exc.doc[:300]!r}"
    else:
        text = f"{exc.__class__.__name__}: {exc}"
    text = " ".join(redact(text, secret).split())
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class Backoff:
    """Exponential backoff with full jitter: attempt k waits uniform(0, min(cap, base * 2**k)) seconds."""

    base_s: float = 1.0
    cap_s: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0.0, min(self.cap_s, self.base_s * 2**attempt))


class GeminiClient:
    """A google-genai client for one model and temperature that counts the HTTP calls it makes."""

    def __init__(
        self,
        api_key: str,
        model: str,
        temperature: float,
        *,
        base_url: str | None = None,
        timeout_s: float = 120,
        max_retries: int = 4,
        backoff: Backoff | None = None,
    ):
        self._key = api_key
        self.model = model
        self.max_retries = max_retries
        self.backoff = backoff or Backoff()
        self.calls = 0
        self._config = types.GenerateContentConfig(temperature=temperature)
        options = types.HttpOptions(
            base_url=base_url, api_version=API_VERSION, timeout=max(1, round(timeout_s * 1000))
        )  # milliseconds
        self._client = genai.Client(api_key=api_key, vertexai=False, http_options=options)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GeminiClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def generate(self, parts: Sequence[types.Part | str], what: str) -> types.GenerateContentResponse:
        """One generateContent request, retried on transient failures; raises a GeminiError subclass."""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            self.calls += 1
            failure: str | None = None
            transient = False
            status: int | None = None
            try:
                return self._client.models.generate_content(model=self.model, contents=list(parts), config=self._config)
            except (
                genai_errors.APIError,
                genai_errors.UnknownApiResponseError,
                json.JSONDecodeError,
                *_TRANSPORT_ERRORS,
            ) as e:
                # Only text leaves this block, so the SDK exception (and its raw response) is dropped here.
                failure = _describe(e, self._key)
                transient = is_transient(e)
                status = e.code if isinstance(e, genai_errors.APIError) else None
            if not transient:
                break
            if attempt + 1 < attempts:
                delay = self.backoff.delay(attempt)
                LOG.warning(
                    "Gemini %s call failed (%s); retry %d/%d in %.2fs",
                    what,
                    failure,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                self.backoff.sleep(delay)
        if not transient:
            if status is not None and 400 <= status < 500:
                raise GeminiRequestError(f"Gemini API rejected the {what} request ({failure})", status)
            raise GeminiError(f"Gemini {what} call failed ({failure})", status)
        raise GeminiUnavailableError(f"Gemini {what} call failed after {attempts} attempts ({failure})", status)
