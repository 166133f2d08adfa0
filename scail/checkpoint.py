"""Official SCAIL-2 checkpoint names: the one place they meet our modules.

- `official_to_module_key`: converted-safetensors names -> SCAIL2Transformer parameter names.
- `official_tensors`: the one per-tensor normaliser (repack prefixes stripped, fp8-scaled weights dequantised).
- `load_official_state_dict`: strict load (a missing or unexpected key is an error naming it).
- `training_to_official_key` / `convert_training_checkpoint`: the training checkpoint
  (`model/1/fsdp2_rank_0000_checkpoint.pt`) to one safetensors file, one tensor at a time.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from scailflow.errors import InputError

log = logging.getLogger("scailflow.scail")

REPACK_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")
SCAIL2_MARKER = "patch_embedding_mask.weight"
FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))
# kept in float32 whatever dtype the rest is loaded in (modulation, time path and norms are fp32 in the official code)
FP32_PATTERNS = ("scale_shift_table", "condition_embedder.time_embedder", "condition_embedder.time_proj")

_TOP = {
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
    "head.head": "proj_out",
    "patch_embedding": "patch_embedding",
    "patch_embedding_pose": "patch_embedding_pose",
    "patch_embedding_mask": "patch_embedding_mask",
}
_BLOCK = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "cross_attn.norm_k_img": "attn2.norm_added_k",
    "norm3": "norm2",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")


def official_to_module_key(key: str) -> str:
    """Map one official (converted) key onto SCAIL2Transformer's parameter name; KeyError if unknown."""
    if key == "head.modulation":
        return "scale_shift_table"
    m = re.match(r"^blocks\.(\d+)\.modulation$", key)
    if m:
        return f"blocks.{m.group(1)}.scale_shift_table"
    m = _BLOCK_RE.match(key)
    if m and m.group(2) in _BLOCK:
        return f"blocks.{m.group(1)}.{_BLOCK[m.group(2)]}.{m.group(3)}"
    stem, _, leaf = key.rpartition(".")
    if stem in _TOP and leaf in ("weight", "bias"):
        return f"{_TOP[stem]}.{leaf}"
    raise KeyError(key)


def repack_prefix(keys: Iterable[str]) -> str:
    """The `model.diffusion_model.` / `diffusion_model.` prefix every key of a single-file repack shares ('' if none)."""
    keys = list(keys)
    return next((p for p in REPACK_PREFIXES if keys and all(k.startswith(p) for k in keys)), "")


def strip_repack_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefix = repack_prefix(state_dict)
    return {k[len(prefix) :]: v for k, v in state_dict.items()}


def official_tensors(keys: Iterable[str], get: Callable[[str], torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    """The one per-tensor normaliser of DiT checkpoints: yields (official key, tensor) with a repack prefix stripped,
    fp8-scaled weights (`X.weight` in fp8 + `X.scale_weight`) dequantised and the scale entries dropped. `get(key)`
    reads one tensor, so a file is streamed tensor by tensor."""
    keys = list(keys)
    prefix, present = repack_prefix(keys), set(keys)
    for k in keys:
        if k.endswith("scaled_fp8") or k.endswith((".scale_weight", ".scale_input")):
            continue
        t = get(k)
        if FP8_DTYPES and t.dtype in FP8_DTYPES:
            t = t.to(torch.float32)
            scale_key = k[: -len("weight")] + "scale_weight"
            if k.endswith("weight") and scale_key in present:
                t = t * get(scale_key).to(torch.float32)
        yield k[len(prefix) :], t


def check_is_scail2(keys: Iterable[str], source: str = "checkpoint") -> None:
    """A SCAIL-2 DiT has the driving-mask patch embedding; SCAIL-1 / SCAIL-Preview do not."""
    keys = set(keys)
    if SCAIL2_MARKER not in keys:
        hint = " (a SCAIL-1 / SCAIL-Preview checkpoint?)" if "patch_embedding_pose.weight" in keys else ""
        raise InputError(f"{source} is not a SCAIL-2 DiT: it has no '{SCAIL2_MARKER}'{hint}")


def map_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official names -> module names. Unknown keys raise InputError naming the key."""
    mapped = {}
    for k, v in state_dict.items():
        try:
            mapped[official_to_module_key(k)] = v
        except KeyError:
            raise InputError(f"unexpected key in SCAIL-2 checkpoint: {k}") from None
    return mapped


def load_official_state_dict(
    model: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    device=None,
    dtype: torch.dtype | None = None,
    source: str = "checkpoint",
) -> None:
    """Load official-named weights (as `official_tensors` yields them) into `model`, which may live on the meta
    device, strictly: a missing or unexpected key, or a wrong shape, is an InputError naming it."""
    mapped = map_official(state_dict)
    expected = set(model.state_dict().keys())
    missing = sorted(expected - mapped.keys())
    if missing:
        check_is_scail2(state_dict, source)  # a SCAIL-1 checkpoint gets its own message
        inverse = {official_to_module_key(k): k for k in _all_official_keys(model)}
        raise InputError(
            f"missing key in SCAIL-2 checkpoint: {inverse.get(missing[0], missing[0])}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    own = model.state_dict()
    for name, value in mapped.items():
        if tuple(value.shape) != tuple(own[name].shape):
            raise InputError(
                f"shape of {name} is {tuple(value.shape)}, expected {tuple(own[name].shape)} "
                "(checkpoint and config disagree)"
            )
        if any(p in name for p in FP32_PATTERNS):
            want = torch.float32
        else:
            want = dtype or (value.dtype if value.dtype in (torch.float16, torch.bfloat16) else torch.float32)
        mapped[name] = value.to(device=device or "cpu", dtype=want)
    model.load_state_dict(mapped, strict=True, assign=True)
    rope = model.rope
    model.rope = type(rope)(model.config.attention_head_dim, rope.max_positions).to(device or "cpu")


def _all_official_keys(model) -> Iterator[str]:
    return official_keys(len(model.blocks))


def official_keys(num_blocks: int) -> Iterator[str]:
    """Every official key a SCAIL-2 DiT with `num_blocks` blocks has (plus the absent biases of bias-free layers)."""
    for stem in _TOP:
        for leaf in ("weight", "bias"):
            yield f"{stem}.{leaf}"
    yield "head.modulation"
    for i in range(num_blocks):
        yield f"blocks.{i}.modulation"
        for stem in _BLOCK:
            for leaf in ("weight", "bias"):
                yield f"blocks.{i}.{stem}.{leaf}"


# --------------------------------------------------------------------------- training checkpoint -> safetensors
def rename(key: str, rules: list[tuple[str, str]]) -> str | None:
    """The first matching (regex, replacement) rule applied to `key`, or None."""
    for pat, repl in rules:
        if re.match(pat, key):
            return re.sub(pat, repl, key)
    return None


def _split(t: torch.Tensor, n: int) -> list[torch.Tensor]:
    return list(torch.chunk(t, n, dim=0))


# training-checkpoint names that map one to one (fused q/k/v and k/v are split in _train_fused)
_TRAIN_SIMPLE = [
    (r"^mixins\.patch_embed\.proj\.(weight|bias)$", r"patch_embedding.\1"),
    (r"^mixins\.patch_embed\.proj_pose\.(weight|bias)$", r"patch_embedding_pose.\1"),
    (r"^mixins\.patch_embed\.proj_mask\.(weight|bias)$", r"patch_embedding_mask.\1"),
    (r"^mixins\.adaln_layer\.adaLN_modulations\.(\d+)$", r"blocks.\1.modulation"),
    (r"^mixins\.adaln_layer\.query_layernorm_list\.(\d+)\.weight$", r"blocks.\1.self_attn.norm_q.weight"),
    (r"^mixins\.adaln_layer\.key_layernorm_list\.(\d+)\.weight$", r"blocks.\1.self_attn.norm_k.weight"),
    (r"^mixins\.adaln_layer\.cross_query_layernorm_list\.(\d+)\.weight$", r"blocks.\1.cross_attn.norm_q.weight"),
    (r"^mixins\.adaln_layer\.cross_key_layernorm_list\.(\d+)\.weight$", r"blocks.\1.cross_attn.norm_k.weight"),
    (
        r"^mixins\.adaln_layer\.clip_feature_key_layernorm_list\.(\d+)\.weight$",
        r"blocks.\1.cross_attn.norm_k_img.weight",
    ),
    (r"^mixins\.final_layer\.adaLN_modulation$", r"head.modulation"),
    (r"^(?:mixins\.)?final_layer\.linear\.(weight|bias)$", r"head.head.\1"),
    (r"^(?:.*\.)?time_embed\.(\d+)\.(weight|bias)$", r"time_embedding.\1.\2"),
    (r"^(?:.*\.)?adaln_projection\.1\.(weight|bias)$", r"time_projection.1.\1"),
    (r"^(?:.*\.)?clip_proj\.proj\.(\d+)\.(weight|bias)$", r"img_emb.proj.\1.\2"),
    (r"^(?:.*\.)?text_embedding\.(\d+)\.(weight|bias)$", r"text_embedding.\1.\2"),
    (r"^transformer\.layers\.(\d+)\.attention\.dense\.(weight|bias)$", r"blocks.\1.self_attn.o.\2"),
    (r"^transformer\.layers\.(\d+)\.cross_attention\.query\.(weight|bias)$", r"blocks.\1.cross_attn.q.\2"),
    (r"^transformer\.layers\.(\d+)\.cross_attention\.dense\.(weight|bias)$", r"blocks.\1.cross_attn.o.\2"),
    (r"^transformer\.layers\.(\d+)\.post_cross_attention_layernorm\.(weight|bias)$", r"blocks.\1.norm3.\2"),
    (r"^transformer\.layers\.(\d+)\.mlp\.dense_h_to_4h\.(weight|bias)$", r"blocks.\1.ffn.0.\2"),
    (r"^transformer\.layers\.(\d+)\.mlp\.dense_4h_to_h\.(weight|bias)$", r"blocks.\1.ffn.2.\2"),
]


def training_to_official(name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Rename (and split fused q/k/v, k/v) one training-checkpoint tensor into official converted names."""
    if name.startswith("model.diffusion_model."):
        name = name[len("model.diffusion_model.") :]
    new = rename(name, _TRAIN_SIMPLE)
    if new is not None:
        return [(new, tensor)]
    return _train_fused(name, tensor)


def _train_fused(name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    m = re.match(r"^transformer\.layers\.(\d+)\.attention\.query_key_value\.(weight|bias)$", name)
    if m:
        i, leaf = m.groups()
        return [(f"blocks.{i}.self_attn.{p}.{leaf}", t) for p, t in zip("qkv", _split(tensor, 3))]
    m = re.match(r"^transformer\.layers\.(\d+)\.cross_attention\.key_value\.(weight|bias)$", name)
    if m:
        i, leaf = m.groups()
        return [(f"blocks.{i}.cross_attn.{p}.{leaf}", t) for p, t in zip("kv", _split(tensor, 2))]
    m = re.match(r"^mixins\.adaln_layer\.clip_feature_key_value_list\.(\d+)\.(weight|bias)$", name)
    if m:
        i, leaf = m.groups()
        return [(f"blocks.{i}.cross_attn.{p}.{leaf}", t) for p, t in zip(("k_img", "v_img"), _split(tensor, 2))]
    raise KeyError(name)


_ST_DTYPES = {
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.bool: "BOOL",
}
if hasattr(torch, "float8_e4m3fn"):
    _ST_DTYPES[torch.float8_e4m3fn] = "F8_E4M3"
    _ST_DTYPES[torch.float8_e5m2] = "F8_E5M2"


def write_safetensors_streaming(
    path: str | os.PathLike, items: Iterable[tuple[str, torch.Tensor]], metadata: dict[str, str] | None = None
) -> Path:
    """Write a safetensors file one tensor at a time (two passes over `items`: shapes, then data).

    Peak host memory is one tensor, not the whole model: `items` is an iterable factory's output, so pass a
    list of (name, lazy tensor) pairs, e.g. from an mmap'ed `torch.load`.
    """
    from scailflow.files import atomic_path

    items = list(items)
    header: dict[str, object] = {}
    offset = 0
    for name, t in items:
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _, t in items:
            t = t.detach().contiguous().cpu()
            f.write(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return Path(path)


def convert_training_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, dtype: torch.dtype | None = None
) -> Path:
    """`model/1/fsdp2_rank_0000_checkpoint.pt` (or the SCAIL-2 folder) -> one official-named safetensors file.

    Loads with `weights_only=True` and `mmap=True`, so tensors are paged in one at a time while writing.
    """
    src = Path(src)
    if src.is_dir():
        cands = sorted(src.glob("model/*/fsdp2_rank_0000_checkpoint.pt")) or sorted(src.glob("**/*checkpoint.pt"))
        if not cands:
            raise InputError(f"no training checkpoint (model/1/fsdp2_rank_0000_checkpoint.pt) under {src}")
        src = cands[-1]
    if not src.is_file():
        raise InputError(f"training checkpoint not found: {src}")
    try:
        ckpt = torch.load(src, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is the user's file
        raise InputError(f"cannot load {src} as a weights-only torch checkpoint: {e.__class__.__name__}: {e}") from None
    sd = ckpt.get("module", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise InputError(f"{src} holds no state dict (expected a dict with 'module')")
    out: list[tuple[str, torch.Tensor]] = []
    for name, t in sd.items():
        if not isinstance(t, torch.Tensor):
            continue
        try:
            pairs = training_to_official(name, t)
        except KeyError:
            raise InputError(f"unexpected key in training checkpoint: {name}") from None
        for k, v in pairs:
            out.append((k, v.to(dtype) if dtype is not None and v.is_floating_point() else v))
    names = {k for k, _ in out}
    check_is_scail2(names, str(src))
    log.info("converting %d tensors from %s -> %s", len(out), src, dst)
    return write_safetensors_streaming(dst, out, {"format": "pt", "source": "scailflow convert"})
