"""LoRAs merged into the SCAIL-2 DiT: several at once, each with its own strength, in the key formats people publish.

For each layer P with a `lora_down` / `lora_up` pair: `P.weight += alpha * (up @ down)` (times `P.alpha / rank` when
the file carries a per-layer `P.alpha`); `P.diff_b` is added to `P.bias` and `P.diff` to `P.weight`, times alpha.
Key formats read (a file may mix prefixes; every key must land on a SCAIL-2 layer, else one line names it):

- lightx2v / ComfyUI: official names (`blocks.0.self_attn.q`), optional `diffusion_model.` / `model.diffusion_model.`
  prefix, `lora_down`/`lora_up` or `lora_A`/`lora_B`, with `.alpha`, `.diff`, `.diff_b`;
- diffusers / PEFT: diffusers' Wan module names (`transformer.blocks.0.attn1.to_q.lora_A.weight`, `ffn.net.0.proj`,
  `condition_embedder.*`), with `base_model.model.` and `.default` from PEFT, `lora_B.bias` as a bias delta;
- kohya (`lora_unet_blocks_0_self_attn_q.lora_down.weight`);
- SCAIL's own training format (`...query_key_value.lora_layer.{0,1,2}.{down,up}.weight`, `...lora_layer.diff_b`),
  renamed with the checkpoint converter's rules (fused q/k/v split).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from scailflow.errors import InputError
from scailflow.scail.checkpoint import official_keys, official_to_module_key, strip_repack_prefix, training_to_official

log = logging.getLogger("scailflow.scail")

_TRAIN_LORA = re.compile(r"^(?P<base>.+)\.lora_layer(?:\.(?P<idx>\d+))?\.(?P<kind>down|up)\.weight$")
_TRAIN_DIFF_B = re.compile(r"^(?P<base>.+)\.lora_layer(?:\.(?P<idx>\d+))?\.diff_b$")
_KEY_PREFIXES = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer.", "lora_unet_")
# suffix as written -> our canonical suffix (longest first where one ends another)
_SUFFIXES = (
    (".lora_A.default.weight", ".lora_down.weight"),
    (".lora_B.default.weight", ".lora_up.weight"),
    (".lora_down.weight", ".lora_down.weight"),
    (".lora_up.weight", ".lora_up.weight"),
    (".lora_A.weight", ".lora_down.weight"),
    (".lora_B.weight", ".lora_up.weight"),
    (".lora.down.weight", ".lora_down.weight"),
    (".lora.up.weight", ".lora_up.weight"),
    (".lora_B.bias", ".diff_b"),
    (".diff_b", ".diff_b"),
    (".diff", ".diff"),
    (".alpha", ".alpha"),
)


@dataclass
class AppliedLora:
    """One merged LoRA, as recorded in output.mp4.json."""

    path: str
    alpha: float
    layers: int
    format: str


def load_lora_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"LoRA file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        sd = torch.load(path, map_location="cpu", weights_only=True)
        return sd.get("module", sd) if isinstance(sd, dict) else sd
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's file is unreadable
        raise InputError(f"cannot read LoRA {path}: {e.__class__.__name__}: {e}") from None


def lora_format(sd: dict[str, torch.Tensor]) -> str:
    """Which published format a LoRA state dict is in (for the record)."""
    keys = list(sd)
    if any(".lora_layer" in k for k in keys):
        return "scail-training"
    if any(k.startswith("lora_unet_") for k in keys):
        return "kohya"
    if any(".attn1." in k or ".attn2." in k or ".ffn.net." in k for k in keys):
        return "diffusers"
    return "lightx2v/comfyui"


def _official_names(base: str) -> list[str]:
    """Official weight names a training-format module base maps to (several for fused q/k/v or k/v)."""
    pairs = training_to_official(base + ".weight", torch.empty(0))
    return [k[: -len(".weight")] for k, _ in pairs]


def _stem_lookup(known: set[str]) -> dict[str, str]:
    """Every spelling of a layer stem we accept -> its official stem: official, diffusers module, kohya."""
    out: dict[str, str] = {}
    for key in known:
        stem = key.rsplit(".", 1)[0] if key.endswith((".weight", ".bias")) else key
        for spelling in (stem, _module_stem(key, stem)):
            if spelling:
                out[spelling] = stem
                out[spelling.replace(".", "_")] = stem
    return out


def _module_stem(key: str, stem: str) -> str | None:
    try:
        module = official_to_module_key(key)
    except KeyError:
        return None
    return module.rsplit(".", 1)[0] if module.endswith((".weight", ".bias")) else module


def _split_suffix(key: str) -> tuple[str, str] | None:
    for written, canonical in _SUFFIXES:
        if key.endswith(written):
            return key[: -len(written)], canonical
    return None


def lora_to_official(sd: dict[str, torch.Tensor], known: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Normalise a LoRA state dict to official stems with `.lora_down.weight` / `.lora_up.weight` / `.alpha` /
    `.diff` / `.diff_b`. `known`: the model's official keys; with it, stems in diffusers or kohya spelling are
    mapped and a key that lands on no layer is an InputError naming it."""
    sd = strip_repack_prefix(dict(sd))
    lookup = _stem_lookup(known) if known is not None else None
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        m = _TRAIN_LORA.match(k) or _TRAIN_DIFF_B.match(k)
        if m:
            try:
                names = _official_names(m.group("base"))
            except KeyError:
                raise InputError(f"LoRA key does not match any SCAIL-2 layer: {k}") from None
            idx = int(m.group("idx") or 0)
            if idx >= len(names):
                raise InputError(f"LoRA key {k}: layer index {idx} out of range")
            kind = m.groupdict().get("kind")
            out[f"{names[idx]}.lora_{kind}.weight" if kind else f"{names[idx]}.diff_b"] = v
            continue
        key = k
        for prefix in _KEY_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        split = _split_suffix(key)
        if split is None:
            raise InputError(f"LoRA key is not a lora_down/lora_up/alpha/diff entry: {k}")
        stem, suffix = split
        if lookup is not None:
            if stem not in lookup:
                raise InputError(f"LoRA key does not match any SCAIL-2 layer: {k}")
            stem = lookup[stem]
        out[stem + suffix] = v
    return out


def _target(params: dict[str, torch.Tensor], stem: str, leaf: str, key: str) -> torch.Tensor:
    for name in (f"{stem}.{leaf}", stem) if leaf == "weight" else (f"{stem}.{leaf}",):
        if name in params:
            return params[name]
    raise InputError(f"LoRA layer {key} has no matching parameter in the model ({stem}.{leaf})")


def _add(w: torch.Tensor, delta: torch.Tensor) -> None:
    w.copy_((w.float() + delta.to(w.device).reshape(w.shape)).to(w.dtype))


@torch.no_grad()
def merge_lora(params: dict[str, torch.Tensor], lora: dict[str, torch.Tensor], alpha: float = 1.0) -> int:
    """Merge `lora` (any supported format) into the official-named tensors `params`, in place; returns the number
    of parameters changed."""
    lora = lora_to_official(lora, set(params))
    merged = 0
    for key, down in lora.items():
        if not key.endswith(".lora_down.weight"):
            continue
        stem = key[: -len(".lora_down.weight")]
        up = lora.get(f"{stem}.lora_up.weight")
        if up is None:
            raise InputError(f"LoRA has {key} but no {stem}.lora_up.weight")
        w = _target(params, stem, "weight", key)
        scale = alpha
        if f"{stem}.alpha" in lora:
            scale *= float(lora[f"{stem}.alpha"]) / down.shape[0]
        dev = w.device
        delta = up.float().to(dev).flatten(1) @ down.float().to(dev).flatten(1)
        _add(w, scale * delta)
        merged += 1
    for key, v in lora.items():
        for suffix, leaf in ((".diff_b", "bias"), (".diff", "weight")):
            if key.endswith(suffix):
                _add(_target(params, key[: -len(suffix)], leaf, key), alpha * v.float())
                merged += 1
    if merged == 0:
        raise InputError("the LoRA file holds no lora_down/lora_up pairs or diffs that match SCAIL-2")
    return merged


def model_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters under their official names (the tensors themselves: merging changes the model)."""
    own = dict(model.named_parameters())
    out = {}
    for key in official_keys(len(model.blocks)):
        name = official_to_module_key(key)
        if name in own:
            out[key] = own[name].data
    return out


def apply_loras(model: torch.nn.Module, loras: list[tuple[str, float]]) -> list[AppliedLora]:
    """Merge each (path, alpha) into `model` in order; returns what was applied (for the output's record)."""
    if not loras:
        return []
    params = model_params(model)
    applied = []
    for path, alpha in loras:
        sd = load_lora_file(path)
        n = merge_lora(params, sd, alpha)
        applied.append(AppliedLora(str(path), float(alpha), n, lora_format(sd)))
        log.info("merged LoRA %s (%s, %d layers, alpha %g)", path, applied[-1].format, n, alpha)
    return applied


def records(applied: list[AppliedLora]) -> list[dict]:
    return [asdict(a) for a in applied]
