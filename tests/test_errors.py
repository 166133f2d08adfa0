"""What counts as out-of-memory and as already retried is defined once (scailflow/errors.py); the CLI, the retry
policy and generation's one retry with offload all ask it."""

from __future__ import annotations

import torch

from scailflow.errors import InputError, RetriedError, is_out_of_memory


def test_out_of_memory_is_torchs_error_and_nothing_else():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    assert is_out_of_memory(torch.OutOfMemoryError("out of memory"))
    assert not is_out_of_memory(RuntimeError("CUDA out of memory"))
    assert not is_out_of_memory(MemoryError())
    assert not is_out_of_memory(None)


def test_the_retry_policy_leaves_out_of_memory_and_retried_calls_alone():
    from scailflow.prompts import GeminiError, GeminiUnavailableError
    from scailflow.tasks.common import heals

    assert issubclass(GeminiError, RetriedError) and issubclass(GeminiError, RuntimeError)
    assert not heals(GeminiUnavailableError("Gemini call failed (503)", 503))
    assert not heals(RetriedError("gave up after 4 tries"))
    assert not heals(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not heals(InputError("bad folder"))
    assert heals(RuntimeError("a transient failure"))
