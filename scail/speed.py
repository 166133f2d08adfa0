"""Switchable speed-ups for the SCAIL-2 DiT; each one is off unless asked for and none changes scail/model.py.

- attention backend and fp8 attention: scail/attention.py (diffusers' attention dispatch; FlashAttention 3 from the
  verified `fa3-fwd` build on Hopper GPUs).
- regional compile: `torch.compile` of the repeated Wan block (compiled once, reused by all 40 blocks); it also fuses
  the LayerNorm + adaLN modulation + gate/residual element-wise work around the matrix products.
- fp8: every `nn.Linear` inside the blocks is swapped for `FP8Linear`: weights stored as float8 e4m3 with one fp32
  scale per output row, activations quantized per token (row) on the fly, product by `torch._scaled_mm` with bf16
  output. Where `_scaled_mm` cannot run (CPU, pre-Hopper GPU) the same quantized values are multiplied in bf16/fp32,
  so the numerics (and the tests) stay the same.
- step caching: scail/step_cache.py (EasyCache here; diffusers' MagCache, First Block Cache, TaylorSeer).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from scailflow.scail.attention import FP8_OFF_REASON, set_attention
from scailflow.scail.options import ModelOptions

log = logging.getLogger("scailflow.scail")

FP8_DTYPE = getattr(torch, "float8_e4m3fn", None)


# ------------------------------------------------------------------------------------------------ compile
def compile_blocks(model: nn.Module, fullgraph: bool = True, mode: str | None = None) -> None:
    """Regional compile: each repeated block through torch.compile (one compiled graph shared by all blocks)."""
    # every size, attention backend and fp8 setting a process meets is one more compiled variant of the block;
    # dynamo's default limit of 8 would turn a long-lived worker's 9th into an error (fullgraph) or eager code
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    kwargs = {"fullgraph": fullgraph, "dynamic": False}
    if mode:
        kwargs["mode"] = mode
    model.compile_repeated_blocks(**kwargs)


# ------------------------------------------------------------------------------------------------ fp8
def quantize_rowwise(t: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric quantization: (q, scale) with t ~= q.float() * scale; scale [..., 1] float32."""
    dtype = dtype or FP8_DTYPE
    fmax = torch.finfo(dtype).max
    amax = t.detach().abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12)
    scale = amax / fmax
    q = (t.float() / scale).clamp(-fmax, fmax).to(dtype)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (q.float() * scale).to(dtype)


_SCALED_MM_OK: dict = {}


def scaled_mm_available(device: torch.device | str) -> bool:
    """torch._scaled_mm with fp8 operands runs on CUDA GPUs of compute capability 8.9 or higher."""
    dev = torch.device(device)
    if dev.type != "cuda" or FP8_DTYPE is None or not torch.cuda.is_available():
        return False
    key = dev.index if dev.index is not None else torch.cuda.current_device()
    if key not in _SCALED_MM_OK:
        _SCALED_MM_OK[key] = torch.cuda.get_device_capability(key) >= (8, 9)
    return _SCALED_MM_OK[key]


class FP8Linear(nn.Module):
    """A Linear with fp8 (e4m3) weights, one scale per output row, and per-token fp8 activations."""

    def __init__(self, linear: nn.Linear, out_dtype: torch.dtype | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.out_dtype = out_dtype  # None: autocast's dtype when autocast is on, else the input's dtype
        q, s = quantize_rowwise(linear.weight.data)
        self.register_buffer("weight_fp8", q)  # [out, in]
        self.register_buffer("weight_scale", s.reshape(1, -1).contiguous())  # [1, out] fp32
        bias = linear.bias.data.float() if linear.bias is not None else None
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, out_dtype: torch.dtype | None = None) -> FP8Linear:
        return cls(linear, out_dtype)

    def _result_dtype(self, x: torch.Tensor) -> torch.dtype:
        if self.out_dtype is not None:
            return self.out_dtype
        if torch.is_autocast_enabled(x.device.type):
            return torch.get_autocast_dtype(x.device.type)
        return x.dtype

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return (self.weight_fp8.float() * self.weight_scale.t()).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        xq, xs = quantize_rowwise(x2)
        dt = self._result_dtype(x)
        bias = None if self.bias is None else self.bias.to(dt)
        if x.is_cuda and scaled_mm_available(x.device):
            out = torch._scaled_mm(
                xq, self.weight_fp8.t(), scale_a=xs, scale_b=self.weight_scale, bias=bias, out_dtype=dt
            )
        else:  # same quantized operands, multiplied in a dtype the device has (fp32 on the CPU)
            mm = dt if x.is_cuda else torch.float32
            with torch.autocast(x.device.type, enabled=False):
                out = F.linear(
                    dequantize(xq, xs, mm), self.dequantized_weight(mm), None if bias is None else bias.to(mm)
                ).to(dt)
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8 e4m3 rowwise"


def swap_fp8_linears(root: nn.Module, out_dtype: torch.dtype | None = None, skip: Iterable[str] = ()) -> int:
    """Replace every nn.Linear under `root` (dims multiples of 16) by an FP8Linear, in place; returns how many.

    The bf16 weights are released as each layer is converted, so peak memory grows by one layer at most."""
    skip = tuple(skip)
    n = 0
    for name, module in list(root.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if not isinstance(child, nn.Linear) or any(s in full for s in skip):
                continue
            if child.in_features % 16 or child.out_features % 16:
                continue
            setattr(module, child_name, FP8Linear(child, out_dtype))
            del child
            n += 1
    return n


def fp8_blocks(model: nn.Module, out_dtype: torch.dtype | None = None) -> int:
    """fp8 weights and matmuls for all linears of the transformer blocks (embedders and head stay as they are)."""
    blocks = model.blocks
    n = swap_fp8_linears(blocks, out_dtype)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return n


# ------------------------------------------------------------------------------------------------ fused projections
def fuse_qkv(model: nn.Module) -> int:
    """Fuse q/k/v (self-attention) and k/v (cross-attention) projections into one matmul each (diffusers' own)."""
    n = 0
    for m in model.modules():
        if hasattr(m, "fuse_projections") and m.__class__.__name__ == "WanAttention":
            m.fuse_projections()
            n += 1
    return n


# ------------------------------------------------------------------------------------------------ step cache
def enable_step_cache(model: nn.Module, kind: str = "firstblock", threshold: float = 0.05, steps: int = 40) -> None:
    """Hook a step cache on now (scail/step_cache.py; a generation hooks the one it asks for by itself). The caller
    runs each forward inside `cache_context(model, name)` (one name per CFG branch)."""
    from scailflow.scail import step_cache
    from scailflow.scail.options import parse_step_cache

    step_cache.detach(model)
    step_cache.attach(model, parse_step_cache(f"{'firstblock' if kind == 'fbc' else kind}:{threshold}"), steps)


def cache_context(model: nn.Module, name: str):
    """The transformer call of CFG branch `name`: its own step-cache state (when a cache is on), counted."""
    from scailflow.scail.step_cache import context

    return context(model, name)


def reset_step_cache(model: nn.Module) -> None:
    """Forget cached residuals (call before each new denoising loop)."""
    if getattr(model, "_scail_step_cache", (None, None))[0] is not None:
        model._reset_stateful_cache()


# ------------------------------------------------------------------------------------------------ the default path
def decide_compile(opts: ModelOptions, device, gpu: dict | None = None) -> tuple[bool, str]:
    """Whether to compile the DiT block, and why (one phrase for the log line). `--compile` / `--no-compile` decide;
    otherwise compile on a CUDA GPU of compute capability 8.0 or more with Triton, where it was measured 1.12-1.15x per
    DiT forward (bench/NOTES.md) for a ~20-35 s warm-up that the cross-process cache (`compile_cache_dir`) takes
    down to seconds after the first process. `gpu`: {"name", "capability", "triton"} (read from the device when
    None; the tests pass it)."""
    if opts.compile is not None:
        return opts.compile, "--compile" if opts.compile else "--no-compile"
    dev = torch.device(device if device is not None else "cpu")
    if dev.type != "cuda":
        return False, "not on a CUDA GPU"
    gpu = gpu if gpu is not None else gpu_facts(dev)
    if tuple(gpu["capability"]) < (8, 0):
        return False, f"{gpu['name']} (sm{gpu['capability'][0]}{gpu['capability'][1]}) is below sm80, not measured"
    if not gpu["triton"]:
        return False, "Triton is not installed, so torch.compile cannot build GPU kernels"
    if opts.offload == "block":
        return False, "block offload: compile around the offload hooks is not measured (--compile turns it on)"
    return True, f"CUDA {gpu['name']}: compile repays its warm-up in a few steps (1.12-1.15x per forward measured)"


def gpu_facts(device) -> dict:
    """Name, compute capability and whether Triton is importable, for `decide_compile` and the cache key."""
    import importlib.util

    dev = torch.device(device)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return {
        "name": torch.cuda.get_device_name(index),
        "capability": tuple(torch.cuda.get_device_capability(index)),
        "triton": importlib.util.find_spec("triton") is not None,
    }


def compile_cache_dir(opts: ModelOptions, gpu_name: str, home=None) -> Path:
    """Where Inductor keeps this configuration's compiled kernels across processes: SCAILFLOW_HOME/compile/<key>,
    the key naming torch's version, the GPU and the settings that change the compiled graph."""
    import re

    if home is None:
        from scailflow.flows.env import data_dir

        home = data_dir()
    parts = [
        f"torch{torch.__version__}",
        gpu_name,
        f"attn-{opts.attention or 'default'}",
        "fp8" if opts.fp8 else "bf16",
        "fp8attn" if opts.fp8_attention else "",
        f"offload-{opts.offload}",
    ]
    key = re.sub(r"[^A-Za-z0-9.+-]+", "_", "_".join(p for p in parts if p)).strip("_")
    return Path(home) / "compile" / key


def use_compile_cache(path: Path) -> Path:
    """Point Inductor's on-disk caches (FX graphs, autotuning, Triton kernels) at `path`, unless the user set
    TORCHINDUCTOR_CACHE_DIR; returns the directory in use."""
    import os

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    try:  # Inductor writes its default into the variable once it has looked: that one is not the user's
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        default = default_cache_dir()
    except Exception:  # noqa: BLE001 - another torch layout: treat any value as the user's
        default = None
    if current and current != default:
        return Path(current)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


# ------------------------------------------------------------------------------------------------ one entry
def apply_speedups(model: nn.Module, opts: ModelOptions, device=None) -> dict:
    """Apply the speed-ups `opts` asks for to a SCAIL2Transformer that will run on `device` (default: where its
    weights are); returns what was applied (for logs and records).

    Order matters: fp8 changes the modules, so it comes before compile."""
    applied: dict = {}
    concrete, fp8_on = set_attention(model, opts.attention, device, fp8=opts.fp8_attention)
    if opts.attention or concrete != "sdpa":
        applied["attention"] = concrete
    if opts.fp8_attention:
        applied["fp8_attention"] = True if fp8_on else FP8_OFF_REASON
        if fp8_on:  # how q/k/v are quantised: scail/fp8_attention_triton.py's kernels or the tensor ops
            from scailflow.scail.fp8_attention_triton import fused_available

            on = device if device is not None else next(model.parameters()).device
            applied["fp8_attention_prep"] = "fused Triton" if fused_available(on) else "tensor ops"
    if opts.fp8:
        applied["fp8_linears"] = fp8_blocks(model)
    if opts.step_cache is not None:
        from scailflow.scail import step_cache
        from scailflow.scail.options import parse_step_cache

        spec = parse_step_cache(opts.step_cache)
        step_cache.set_default(model, spec, explicit=True)
        if spec is not None and spec.kind == "firstblock":  # needs no step count: on from now
            step_cache.attach(model, spec, 0)
        elif spec is not None and spec.kind == "mag":  # fail now, not after the encoders ran
            step_cache.load_mag_ratios(model)
        applied["step_cache"] = spec.label if spec else "off"
    dev = device if device is not None else next(model.parameters()).device
    compile_on, why = decide_compile(opts, dev)
    if compile_on:
        if torch.device(dev).type == "cuda":
            cache = use_compile_cache(compile_cache_dir(opts, torch.cuda.get_device_name(torch.device(dev))))
            warm = any(cache.iterdir())
            applied["compile_cache"] = str(cache)
            why += f"; kernel cache {'warm' if warm else 'cold (filled by this process)'} at {cache}"
        # group offload hooks (--offload block) break the block's graph on purpose: compile around them
        compile_blocks(model, fullgraph=opts.offload != "block")
        applied["compile"] = "default"
    log.info(
        "speed path: compile %s (%s); attention %s; fp8 %s",
        "on" if compile_on else "off",
        why,
        concrete if concrete != "sdpa" else "torch SDPA's choice (cuDNN on Hopper)",
        "on (--fp8)" if opts.fp8 else "off (opt-in: it moves the output ~5e-2)",
    )
    if applied:
        log.info("speed-ups: %s", applied)
    return applied
