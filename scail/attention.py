"""Attention backends for the SCAIL-2 DiT, all through diffusers' attention dispatch.

- `sdpa` torch SDPA with its own kernel choice, `cudnn` / `flash` SDPA's cuDNN / FlashAttention-2 kernels,
  `flash3` FlashAttention 3 (the verified `fa3-fwd` build, scail/fa3.py), `sage` SageAttention when installed.
- `auto`: FlashAttention 3 on a Hopper GPU when it is installed and verified, else cuDNN (Ampere and newer), else
  SDPA. Left unset, SDPA chooses, except that a verified FlashAttention 3 on a Hopper GPU is used.
- fp8 self-attention (`fp8=True`, FlashAttention 3 only): q, k, v quantised as scail/fp8_attention.py describes,
  bf16 output. Cross-attention (text and image context) stays bf16.

FlashAttention 3 is registered with diffusers' own registration decorator (`_AttentionBackendRegistry.register`,
the call diffusers makes for each built-in backend) under the `_flash_3` name, whose stock function needs a
`flash_attn_3` distribution; the attention modules are then pointed at it with their public per-module setter.
The registry is process-wide; the fp8 switch is per model (a forward pre-hook sets it for the model that runs).
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from scailflow.errors import InputError
from scailflow.scail import fa3
from scailflow.scail.fp8_attention import quantize_qkv
from scailflow.scail.options import ATTENTION_CHOICES

log = logging.getLogger("scailflow.scail")

BACKEND_NAMES = {
    "sdpa": "native",
    "cudnn": "_native_cudnn",
    "flash": "_native_flash",
    "flash3": "_flash_3",
    "sage": "sage",
}
FP8_OFF_REASON = "off: it needs FlashAttention 3 on a Hopper GPU"


class _Flash3State:
    """What the registered `_flash_3` function runs with."""

    kernel = None  # flash_attn_func of the verified fa3-fwd (emulate_fa3 where a test asks for it)
    fp8 = False  # fp8 self-attention for the model running now
    rotate = True  # Hadamard rotation of q and k before quantising (off only to measure what it buys)


STATE = _Flash3State()


# ------------------------------------------------------------------------------------------------ choice
def choose_attention(
    choice: str, device_type: str, capability: tuple[int, int] = (0, 0), fa3_ready: bool = False, cudnn: bool = True
) -> str:
    """The concrete backend for `choice` on a device of this type and compute capability."""
    if choice not in ATTENTION_CHOICES:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION_CHOICES)}")  # the options model's choices
    if choice != "auto":
        return choice
    if device_type != "cuda":
        return "sdpa"
    if capability[0] == 9 and fa3_ready:
        return "flash3"
    if capability >= (8, 0) and cudnn:
        return "cudnn"
    return "sdpa"


def _capability(device) -> tuple[int, int] | None:
    dev = torch.device(device) if device is not None else None
    if dev is None or dev.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(dev)


def fa3_ready(device, strict: bool = False) -> bool:
    """FlashAttention 3 can run on `device`: a Hopper GPU and the verified fa3-fwd build. A build that fails its
    hash check raises with `strict`, else it is reported and not used."""
    cap = _capability(device)
    if cap is None or cap[0] != 9:
        return False
    try:
        return fa3.load() is not None
    except InputError as e:
        if strict:
            raise
        log.warning("%s; using another attention backend", e)
        return False


def resolve_attention(choice: str, device=None) -> str:
    cap = _capability(device)
    if cap is None:
        return choose_attention(choice, "cpu")
    ready = choice == "auto" and cap[0] == 9 and fa3_ready(device)
    return choose_attention(choice, "cuda", cap, ready, torch.backends.cudnn.is_available())


# ------------------------------------------------------------------------------------------------ FlashAttention 3
def flash3_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    return_lse: bool = False,
    _parallel_config=None,
) -> torch.Tensor:
    """diffusers backend signature, (B, S, H, D). Self-attention in fp8 when the running model asked for it."""
    if attn_mask is not None or dropout_p:
        raise ValueError("FlashAttention 3 here takes no attention mask and no dropout")
    if _parallel_config is not None:
        raise ValueError("FlashAttention 3 here does not run with context parallelism: use --attention cudnn")
    kernel = STATE.kernel
    if STATE.fp8 and not return_lse and key.shape[1] == query.shape[1]:
        q8, k8, v8, dq, dk, dv, v_mean = quantize_qkv(query, key, value, rotate=STATE.rotate)
        out = kernel(q8, k8, v8, softmax_scale=scale, causal=is_causal, q_descale=dq, k_descale=dk, v_descale=dv)
        return (out.float() + v_mean).to(query.dtype)
    dt = query.dtype
    if query.is_cuda and dt != torch.bfloat16:  # this build runs bf16 (and fp8) only
        query, key, value = (t.to(torch.bfloat16) for t in (query, key, value))
    out = kernel(query, key, value, softmax_scale=scale, causal=is_causal, return_attn_probs=return_lse)
    if return_lse:
        out, lse = out
        return out.to(dt), lse.transpose(1, 2)
    return out.to(dt)


def register_flash3(kernel) -> None:
    """Put `flash3_attention`, running `kernel` (fa3-fwd's `flash_attn_func`), in diffusers' `_flash_3` slot."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    STATE.kernel = kernel
    _AttentionBackendRegistry.register(AttentionBackendName._FLASH_3)(flash3_attention)


def verified_kernel(device):
    """fa3-fwd's `flash_attn_func` for `device`, or one line saying why not (not Hopper, not installed, tampered)."""
    cap = _capability(device)
    if cap is None or cap[0] != 9:
        where = "a CPU" if cap is None else f"a GPU of compute capability {cap[0]}.{cap[1]}"
        raise InputError(f"--attention flash3: FlashAttention 3 runs on Hopper GPUs (H100, H200), not {where}")
    loaded = fa3.load()
    if loaded is None:
        raise InputError(f"--attention flash3 needs FlashAttention 3: {fa3.INSTALL_HINT}")
    return loaded.flash_attn_func


def _select_per_module(model: nn.Module, backend: str) -> None:
    """Every attention module's public setter (the model-level setter also checks diffusers' own requirements,
    which name the upstream `flash_attn_3` / sageattention>=2 distributions, not the kernels registered here)."""
    from diffusers.models.attention import AttentionModuleMixin

    n = 0
    for m in model.modules():
        if isinstance(m, AttentionModuleMixin):
            m.set_attention_backend(backend)
            n += 1
    if not n:
        raise ValueError("the model has no attention modules to route")


def _fp8_pre_hook(module, args, kwargs=None):
    STATE.fp8 = bool(getattr(module, "_scailflow_fp8_attention", False))


def _set_fp8(model: nn.Module, on: bool) -> None:
    model._scailflow_fp8_attention = on
    if getattr(model, "_scailflow_fp8_hook", None) is None:
        model._scailflow_fp8_hook = model.register_forward_pre_hook(_fp8_pre_hook)
    STATE.fp8 = on


# ------------------------------------------------------------------------------------------------ SageAttention 1
def _sage_v1_attention(
    query,
    key,
    value,
    attn_mask=None,
    dropout_p=0.0,
    is_causal=False,
    scale=None,
    return_lse=False,
    _parallel_config=None,
):
    """SageAttention 1.x (Triton; INT8 Q.K^T, 16-bit P.V) on diffusers' [B, S, H, D] layout."""
    from sageattention import sageattn

    if attn_mask is not None or return_lse or _parallel_config is not None or dropout_p:
        raise NotImplementedError("SageAttention 1.x here: no mask, no LSE, no context parallelism")
    return sageattn(query, key, value, tensor_layout="NHD", is_causal=is_causal, sm_scale=scale)


def _use_sage_v1(model: nn.Module) -> None:
    """diffusers' own `sage` backend wants sageattention>=2.1.1 (CUDA extension); 1.x is pure Triton and can be
    carried as a wheel: register a 1.x call in the `sage` slot and point every attention module at it."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    _AttentionBackendRegistry.register(AttentionBackendName.SAGE)(_sage_v1_attention)
    _select_per_module(model, "sage")


# ------------------------------------------------------------------------------------------------ one entry
def model_device(model: nn.Module):
    p = next(model.parameters(), None)
    return p.device if p is not None and p.device.type != "meta" else None


def set_attention(
    model: nn.Module, choice: str | None = "auto", device=None, fp8: bool = False, kernel=None
) -> tuple[str, bool]:
    """Route every attention of `model` through one backend; returns (the concrete choice, fp8 self-attention on).

    `choice` None: leave SDPA's own choice, unless FlashAttention 3 is ready on `device` (a Hopper GPU). `fp8`
    needs FlashAttention 3; where it cannot run, fp8 attention is off (with a warning) and bf16 attention runs.
    `kernel`: what `flash3` runs instead of the verified fa3-fwd (emulate_fa3 in CPU tests)."""
    device = device if device is not None else model_device(model)
    if choice is None and (fp8 or kernel is not None or fa3_ready(device)):
        choice = "auto"
    if choice is None:
        return "sdpa", False
    concrete = "flash3" if kernel is not None and choice == "auto" else resolve_attention(choice, device)
    if concrete == "flash3":
        register_flash3(kernel if kernel is not None else verified_kernel(device))
        _select_per_module(model, BACKEND_NAMES["flash3"])
    else:
        try:
            model.set_attention_backend(BACKEND_NAMES[concrete])
        except Exception:
            if concrete != "sage":
                raise
            _use_sage_v1(model)
    on = fp8 and concrete == "flash3"
    if fp8 and not on:
        log.warning("fp8 attention is %s (attention: %s)", FP8_OFF_REASON, concrete)
    if concrete == "flash3":
        _set_fp8(model, on)
    return concrete, on
