"""Strict loading, repack prefixes, fp8-scaled repacks, the training-checkpoint converter and LoRA merge math."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from scailflow.errors import InputError
from scailflow.scail.checkpoint import convert_training_checkpoint
from scailflow.scail.loading import infer_official_config, load_transformer
from scailflow.scail.lora import lora_to_official, merge_lora
from scailflow.scail.model import SCAIL2Transformer


@pytest.fixture(scope="module")
def official(conformance):
    cfg = json.loads((conformance / "tiny_scail2_config.json").read_text())
    return load_file(str(conformance / "tiny_scail2_state_dict.safetensors")), cfg


def test_missing_key_is_named(official):
    sd, cfg = official
    sd = dict(sd)
    del sd["blocks.1.cross_attn.norm_k_img.weight"]
    with pytest.raises(InputError, match=r"missing key .*blocks\.1\.cross_attn\.norm_k_img\.weight"):
        SCAIL2Transformer.from_official(sd, cfg)


def test_unexpected_key_is_named(official):
    sd, cfg = official
    sd = dict(sd, **{"blocks.0.self_attn.extra.weight": torch.zeros(1)})
    with pytest.raises(InputError, match=r"unexpected key .*blocks\.0\.self_attn\.extra\.weight"):
        SCAIL2Transformer.from_official(sd, cfg)


def test_scail1_checkpoint_is_refused(official):
    sd, cfg = official
    sd = {k: v for k, v in sd.items() if not k.startswith("patch_embedding_mask")}
    with pytest.raises(InputError, match="not a SCAIL-2 DiT.*patch_embedding_mask.weight.*SCAIL-1"):
        SCAIL2Transformer.from_official(sd, cfg)


def test_wrong_shape_is_named(official):
    sd, cfg = official
    with pytest.raises(InputError, match="shape of"):
        SCAIL2Transformer.from_official(sd, dict(cfg, ffn_dim=96))


@pytest.mark.parametrize("prefix", ["model.diffusion_model.", "diffusion_model."])
def test_repack_prefixes_and_bf16(official, tmp_path, prefix):
    sd, cfg = official
    path = tmp_path / "repack.safetensors"
    save_file({prefix + k: v.to(torch.bfloat16) for k, v in sd.items()}, str(path))
    model = load_transformer(path, "cpu", torch.bfloat16)
    assert model.patch_embedding.weight.dtype == torch.bfloat16
    assert model.scale_shift_table.dtype == torch.float32  # modulation stays fp32
    assert torch.equal(model.proj_out.weight, sd["head.head.weight"].to(torch.bfloat16))
    assert infer_official_config(sd) == dict(
        cfg_subset(cfg), freq_dim=256, in_dim=20, mask_dim=28, out_dim=16, eps=1e-6
    )


def cfg_subset(cfg):
    return {k: cfg[k] for k in ("dim", "num_heads", "num_layers", "ffn_dim", "text_dim")}


@pytest.mark.skipif(not hasattr(torch, "float8_e4m3fn"), reason="no fp8 dtype in this torch")
def test_fp8_scaled_repack_dequantized(official, tmp_path):
    sd, cfg = official
    w = sd["blocks.0.ffn.0.weight"]
    scale = w.abs().max() / 448
    packed = dict(sd)
    packed["blocks.0.ffn.0.weight"] = (w / scale).to(torch.float8_e4m3fn)
    packed["blocks.0.ffn.0.scale_weight"] = scale.reshape(1)
    packed["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    path = tmp_path / "fp8.safetensors"
    save_file(packed, str(path))
    model = load_transformer(path, "cpu", torch.float32, config=cfg)
    got = model.blocks[0].ffn.net[0].proj.weight
    assert ((got - w).norm() / w.norm()) < 0.05 and not torch.equal(got, w)


def official_to_training(sd: dict) -> dict:
    """The inverse of the converter's renames, written independently from the spec's table."""
    out = {}
    fused: dict[str, dict] = {}
    for k, v in sd.items():
        m = re.match(r"blocks\.(\d+)\.(.+)$", k)
        if k.startswith("patch_embedding"):
            suffix = {
                "patch_embedding": "proj",
                "patch_embedding_pose": "proj_pose",
                "patch_embedding_mask": "proj_mask",
            }
            stem, leaf = k.rsplit(".", 1)
            out[f"mixins.patch_embed.{suffix[stem]}.{leaf}"] = v
        elif k.startswith(("text_embedding", "time_embedding", "time_projection", "img_emb")):
            k2 = k.replace("time_embedding", "time_embed").replace("time_projection", "adaln_projection")
            out[k2.replace("img_emb.proj", "clip_proj.proj")] = v
        elif k == "head.modulation":
            out["mixins.final_layer.adaLN_modulation"] = v
        elif k.startswith("head.head"):
            out["final_layer.linear." + k.rsplit(".", 1)[1]] = v
        elif m:
            i, rest = m.groups()
            L = f"transformer.layers.{i}"
            A = "mixins.adaln_layer"
            simple = {
                "modulation": f"{A}.adaLN_modulations.{i}",
                "self_attn.norm_q.weight": f"{A}.query_layernorm_list.{i}.weight",
                "self_attn.norm_k.weight": f"{A}.key_layernorm_list.{i}.weight",
                "cross_attn.norm_q.weight": f"{A}.cross_query_layernorm_list.{i}.weight",
                "cross_attn.norm_k.weight": f"{A}.cross_key_layernorm_list.{i}.weight",
                "cross_attn.norm_k_img.weight": f"{A}.clip_feature_key_layernorm_list.{i}.weight",
            }
            if rest in simple:
                out[simple[rest]] = v
                continue
            part, leaf = rest.rsplit(".", 1)
            names = {
                "self_attn.o": f"{L}.attention.dense",
                "cross_attn.q": f"{L}.cross_attention.query",
                "cross_attn.o": f"{L}.cross_attention.dense",
                "norm3": f"{L}.post_cross_attention_layernorm",
                "ffn.0": f"{L}.mlp.dense_h_to_4h",
                "ffn.2": f"{L}.mlp.dense_4h_to_h",
            }
            if part in names:
                out[f"{names[part]}.{leaf}"] = v
            else:
                group = {
                    "self_attn.q": ("qkv", 0),
                    "self_attn.k": ("qkv", 1),
                    "self_attn.v": ("qkv", 2),
                    "cross_attn.k": ("kv", 0),
                    "cross_attn.v": ("kv", 1),
                    "cross_attn.k_img": ("img", 0),
                    "cross_attn.v_img": ("img", 1),
                }[part]
                fused.setdefault(f"{i}.{group[0]}.{leaf}", {})[group[1]] = v
    for key, parts in fused.items():
        i, g, leaf = key.split(".")
        name = {
            "qkv": f"transformer.layers.{i}.attention.query_key_value",
            "kv": f"transformer.layers.{i}.cross_attention.key_value",
            "img": f"mixins.adaln_layer.clip_feature_key_value_list.{i}",
        }[g]
        out[f"{name}.{leaf}"] = torch.cat([parts[j] for j in sorted(parts)])
    return {"model.diffusion_model." + k: v for k, v in out.items()}


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_converter_round_trip(official, tmp_path, dtype):
    sd, cfg = official
    ckpt = tmp_path / "SCAIL-2" / "model" / "1" / "fsdp2_rank_0000_checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"module": official_to_training(sd)}, ckpt)
    out = convert_training_checkpoint(tmp_path / "SCAIL-2", tmp_path / "scail2.safetensors", dtype)
    back = load_file(str(out))
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert torch.equal(back[k], v.to(dtype or v.dtype)), k
    SCAIL2Transformer.from_official(back, cfg)  # strict load succeeds


def test_converter_refuses_pickled_code(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"module": Evil()}, path)
    with pytest.raises(InputError, match="weights-only"):
        convert_training_checkpoint(path, tmp_path / "out.safetensors")
    assert not (tmp_path / "pwned").exists()


def test_lora_merge_math():
    torch.manual_seed(0)
    w, b = torch.randn(8, 6), torch.randn(8)
    down, up, diff_b = torch.randn(2, 6), torch.randn(8, 2), torch.randn(8)
    sd = {"blocks.0.self_attn.q.weight": w.clone(), "blocks.0.self_attn.q.bias": b.clone()}
    lora = {
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight": down,
        "diffusion_model.blocks.0.self_attn.q.lora_up.weight": up,
        "diffusion_model.blocks.0.self_attn.q.diff_b": diff_b,
    }
    assert merge_lora(sd, lora, alpha=0.5) == 2
    assert torch.allclose(sd["blocks.0.self_attn.q.weight"], w + 0.5 * up @ down)
    assert torch.allclose(sd["blocks.0.self_attn.q.bias"], b + 0.5 * diff_b)


def test_lora_per_layer_alpha_scales_by_rank():
    w = torch.zeros(4, 4)
    sd = {"blocks.0.ffn.0.weight": w.clone()}
    down, up = torch.ones(2, 4), torch.ones(4, 2)
    merge_lora(
        sd,
        {
            "blocks.0.ffn.0.lora_down.weight": down,
            "blocks.0.ffn.0.lora_up.weight": up,
            "blocks.0.ffn.0.alpha": torch.tensor(1.0),
        },
        alpha=1.0,
    )
    assert torch.allclose(sd["blocks.0.ffn.0.weight"], 0.5 * up @ down)


def test_training_format_lora_splits_fused_qkv():
    lora = {}
    for j in range(3):
        lora[f"model.diffusion_model.transformer.layers.3.attention.query_key_value.lora_layer.{j}.down.weight"] = (
            torch.full((1, 2), j + 1.0)
        )
        lora[f"model.diffusion_model.transformer.layers.3.attention.query_key_value.lora_layer.{j}.up.weight"] = (
            torch.ones(2, 1)
        )
    lora["model.diffusion_model.transformer.layers.3.mlp.dense_h_to_4h.lora_layer.diff_b"] = torch.ones(2)
    names = lora_to_official(lora)
    assert torch.equal(names["blocks.3.self_attn.k.lora_down.weight"], torch.full((1, 2), 2.0))
    assert "blocks.3.self_attn.v.lora_up.weight" in names and "blocks.3.ffn.0.diff_b" in names
    sd = {f"blocks.3.self_attn.{p}.weight": torch.zeros(2, 2) for p in "qkv"} | {"blocks.3.ffn.0.bias": torch.zeros(2)}
    merge_lora(sd, lora)
    assert torch.equal(sd["blocks.3.self_attn.v.weight"], torch.full((2, 2), 3.0))


def test_lora_for_missing_layer_is_named():
    with pytest.raises(InputError, match="blocks.9.self_attn.q"):
        merge_lora(
            {"blocks.0.self_attn.q.weight": torch.zeros(2, 2)},
            {
                "blocks.9.self_attn.q.lora_down.weight": torch.zeros(1, 2),
                "blocks.9.self_attn.q.lora_up.weight": torch.zeros(2, 1),
            },
        )
