"""LoRA merge into official-named DiT weights (lightx2v format and SCAIL's own training-format LoRAs).

For each `P.lora_down.weight` / `P.lora_up.weight` pair: `P.weight += alpha * (up @ down)` (times `P.alpha / rank`
when the file carries a per-layer `P.alpha`); `P.diff_b` is added to `P.bias` and `P.diff` to `P.weight`, times
alpha. A leading `diffusion_model.` prefix is stripped. Training-format keys
(`...query_key_value.lora_layer.{0,1,2}.{down,up}.weight`) are renamed with the same rules as the checkpoint
converter.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from scailflow.errors import InputError
from scailflow.scail.checkpoint import strip_repack_prefix, training_to_official

_TRAIN_LORA = re.compile(r"^(?P<base>.+)\.lora_layer(?:\.(?P<idx>\d+))?\.(?P<kind>down|up)\.weight$")
_TRAIN_DIFF_B = re.compile(r"^(?P<base>.+)\.lora_layer(?:\.(?P<idx>\d+))?\.diff_b$")


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


def _official_names(base: str) -> list[str]:
    """Official weight names a training-format module base maps to (several for fused q/k/v or k/v)."""
    pairs = training_to_official(base + ".weight", torch.empty(0))
    return [k[: -len(".weight")] for k, _ in pairs]


def lora_to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Normalise a LoRA state dict to official names with `.lora_down.weight` / `.lora_up.weight` / `.diff_b`."""
    sd = strip_repack_prefix(dict(sd))
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        m = _TRAIN_LORA.match(k) or _TRAIN_DIFF_B.match(k)
        if not m:
            out[k.replace(".lora_A.", ".lora_down.").replace(".lora_B.", ".lora_up.")] = v
            continue
        try:
            names = _official_names(m.group("base"))
        except KeyError:
            raise InputError(f"LoRA key does not match any SCAIL-2 layer: {k}") from None
        idx = int(m.group("idx") or 0)
        if idx >= len(names):
            raise InputError(f"LoRA key {k}: layer index {idx} out of range")
        target = names[idx]
        if "kind" in m.groupdict() and m.group("kind"):
            out[f"{target}.lora_{m.group('kind')}.weight"] = v
        else:
            out[f"{target}.diff_b"] = v
    return out


def merge_lora(state_dict: dict[str, torch.Tensor], lora: dict[str, torch.Tensor], alpha: float = 1.0) -> int:
    """Merge `lora` (any supported format) into the official-named `state_dict` in place; returns layers merged."""
    lora = lora_to_official(lora)
    merged = 0
    for key, down in lora.items():
        if not key.endswith(".lora_down.weight"):
            continue
        stem = key[: -len(".lora_down.weight")]
        up = lora.get(f"{stem}.lora_up.weight")
        if up is None:
            raise InputError(f"LoRA has {key} but no {stem}.lora_up.weight")
        target = f"{stem}.weight"
        if target not in state_dict:
            raise InputError(f"LoRA layer {stem} has no matching weight in the model ({target})")
        w = state_dict[target]
        scale = alpha
        if f"{stem}.alpha" in lora:
            scale *= float(lora[f"{stem}.alpha"]) / down.shape[0]
        delta = up.float().to(w.device) @ down.float().to(w.device)
        state_dict[target] = (w.float() + scale * delta.reshape(w.shape)).to(w.dtype)
        merged += 1
    for key, v in lora.items():
        for suffix, leaf in ((".diff_b", ".bias"), (".diff", ".weight")):
            if key.endswith(suffix):
                target = key[: -len(suffix)] + leaf
                if target not in state_dict:
                    raise InputError(f"LoRA key {key} has no matching parameter in the model ({target})")
                w = state_dict[target]
                state_dict[target] = (w.float() + alpha * v.float().to(w.device)).to(w.dtype)
                merged += 1
    if merged == 0:
        raise InputError("the LoRA file holds no lora_down/lora_up pairs or diffs that match SCAIL-2")
    return merged
