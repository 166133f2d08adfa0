"""Several LoRAs, each with its strength, in the published key formats: real safetensors files merged into the tiny
model, and `scailflow generate --lora_path A B --lora_alpha 0.8 1.0` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from scailflow.errors import InputError
from scailflow.flows.config import load_pipelines
from scailflow.media import read_video
from scailflow.scail.lora import apply_loras, model_params
from scailflow.scail.options import ModelOptions
from scailflow.scail.tiny import tiny_components
from tests.support.folders import official_args, write_prepared
from tests.test_scail_generate import cli

# (official stem, diffusers module stem) of the layers the test LoRA touches
LAYERS = [
    ("blocks.0.self_attn.q", "blocks.0.attn1.to_q"),
    ("blocks.0.self_attn.o", "blocks.0.attn1.to_out.0"),
    ("blocks.1.cross_attn.k_img", "blocks.1.attn2.add_k_proj"),
    ("blocks.1.ffn.0", "blocks.1.ffn.net.0.proj"),
]
RANK = 4


def tiny_dit():
    return tiny_components(0)["transformer"]


def random_lora(seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{official stem: (down [r, in], up [out, r])} shaped for the tiny model, plus a bias delta for the head."""
    g = torch.Generator().manual_seed(seed)
    params = model_params(tiny_dit())
    out = {}
    for stem, _ in LAYERS:
        o, i = params[stem + ".weight"].shape
        out[stem] = (torch.randn(RANK, i, generator=g), torch.randn(o, RANK, generator=g))
    return out


def expected(lora, alpha, file_alpha=None, base=None):
    base = base if base is not None else model_params(tiny_dit())
    want = {k: v.clone() for k, v in base.items()}
    for stem, (down, up) in lora.items():
        scale = alpha * (file_alpha / RANK if file_alpha is not None else 1.0)
        want[stem + ".weight"] += scale * up @ down
    return want


def write_format(path, fmt, lora, head_diff_b=None):
    sd = {}
    for (stem, module), (down, up) in zip(LAYERS, lora.values()):
        if fmt == "lightx2v":
            sd[f"diffusion_model.{stem}.lora_down.weight"] = down
            sd[f"diffusion_model.{stem}.lora_up.weight"] = up
        elif fmt == "comfyui":
            sd[f"diffusion_model.{stem}.lora_A.weight"] = down
            sd[f"diffusion_model.{stem}.lora_B.weight"] = up
        elif fmt == "diffusers":
            sd[f"transformer.{module}.lora_A.weight"] = down
            sd[f"transformer.{module}.lora_B.weight"] = up
        elif fmt == "kohya":
            k = "lora_unet_" + stem.replace(".", "_")
            sd[f"{k}.lora_down.weight"], sd[f"{k}.lora_up.weight"] = down, up
            sd[f"{k}.alpha"] = torch.tensor(float(RANK))  # alpha == rank: scale 1
    if head_diff_b is not None:
        sd["diffusion_model.head.head.diff_b"] = head_diff_b
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


@pytest.mark.parametrize("fmt", ["lightx2v", "comfyui", "diffusers", "kohya"])
def test_each_key_format_merges_the_same_weights(tmp_path, fmt):
    lora = random_lora(1)
    diff_b = torch.randn(model_params(tiny_dit())["head.head.bias"].shape)
    path = write_format(tmp_path / f"{fmt}.safetensors", fmt, lora, diff_b)
    model = tiny_dit()
    (applied,) = apply_loras(model, [(str(path), 0.7)])
    want = expected(lora, 0.7)
    want["head.head.bias"] += 0.7 * diff_b
    got = model_params(model)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5, msg=key)
    assert applied.layers == len(LAYERS) + 1 and applied.alpha == 0.7
    assert applied.format == {"lightx2v": "lightx2v/comfyui", "comfyui": "lightx2v/comfyui"}.get(fmt, fmt)


def test_scail_training_format_splits_fused_qkv(tmp_path):
    model = tiny_dit()
    base = model_params(model)
    dim = base["blocks.0.self_attn.q.weight"].shape[0]
    g = torch.Generator().manual_seed(3)
    sd, lora = {}, {}
    for j, p in enumerate("qkv"):
        down, up = torch.randn(2, dim, generator=g), torch.randn(dim, 2, generator=g)
        base_key = "model.diffusion_model.transformer.layers.0.attention.query_key_value.lora_layer"
        sd[f"{base_key}.{j}.down.weight"], sd[f"{base_key}.{j}.up.weight"] = down, up
        lora[f"blocks.0.self_attn.{p}"] = (down, up)
    path = tmp_path / "dpo.safetensors"
    save_file(sd, str(path))
    want = {k: v.clone() for k, v in base.items()}
    for stem, (down, up) in lora.items():
        want[stem + ".weight"] += up @ down
    apply_loras(model, [(str(path), 1.0)])
    for stem in lora:
        torch.testing.assert_close(model_params(model)[stem + ".weight"], want[stem + ".weight"])


def test_two_loras_stack_with_their_own_strengths(tmp_path):
    a, b = random_lora(1), random_lora(2)
    pa = write_format(tmp_path / "a.safetensors", "lightx2v", a)
    pb = write_format(tmp_path / "b.safetensors", "diffusers", b)
    model = tiny_dit()
    applied = apply_loras(model, ModelOptions(lora_path=[str(pa), str(pb)], lora_alpha=[0.8, 1.0]).loras())
    want = expected(b, 1.0, base=expected(a, 0.8))
    for stem, _ in LAYERS:
        torch.testing.assert_close(model_params(model)[stem + ".weight"], want[stem + ".weight"])
    assert [(x.path, x.alpha) for x in applied] == [(str(pa), 0.8), (str(pb), 1.0)]


def test_a_key_for_another_model_is_named(tmp_path):
    path = tmp_path / "sdxl.safetensors"
    save_file({"lora_unet_down_blocks_0_attn.lora_down.weight": torch.zeros(1, 2)}, str(path))
    with pytest.raises(InputError, match="lora_unet_down_blocks_0_attn"):
        apply_loras(tiny_dit(), [(str(path), 1.0)])


def test_lora_options_one_or_many():
    assert ModelOptions(lora_path="a.safetensors").loras() == [("a.safetensors", 1.0)]
    assert ModelOptions(lora_path=["a", "b"], lora_alpha=0.5).loras() == [("a", 0.5), ("b", 0.5)]
    with pytest.raises(ValueError, match="one strength per LoRA"):
        ModelOptions(lora_path=["a", "b"], lora_alpha=[0.5, 0.5, 0.5])
    # the comfy preset names its strengths; the paths are the user's
    assert ModelOptions(lora_path=["l", "d"]).for_preset("comfy").loras() == [("l", 0.8), ("d", 1.0)]
    assert ModelOptions(lora_path=["l", "d"], lora_alpha=[1, 1]).for_preset("comfy").loras() == [("l", 1), ("d", 1)]


def test_pipelines_yaml_takes_a_list_of_loras(tmp_path):
    (tmp_path / "pipelines.yaml").write_text(
        "model:\n  lora_path: [loras/lightx2v.safetensors, loras/dpo.safetensors]\n  lora_alpha: [0.8, 1.0]\n"
        "pipelines:\n  - name: p\n    root: clips\n"
    )
    cfg = load_pipelines(tmp_path / "pipelines.yaml")
    assert cfg.model.loras() == [
        (str(tmp_path / "loras/lightx2v.safetensors"), 0.8),
        (str(tmp_path / "loras/dpo.safetensors"), 1.0),
    ]


@pytest.mark.slow
@pytest.mark.integration
def test_generate_with_two_lora_files_end_to_end(tmp_path):
    d = write_prepared(tmp_path)
    pa = write_format(tmp_path / "lightx2v.safetensors", "lightx2v", random_lora(1))
    pb = write_format(tmp_path / "dpo.safetensors", "kohya", random_lora(2))
    common = ["--model", "tiny-random", "--target_h", 64, "--target_w", 32, "--seed", 3, "--preset", "comfy"]
    plain = cli("generate", *official_args(d, **{"--save_file": tmp_path / "plain.mp4"}), *common)
    assert plain.returncode == 0, plain.stderr
    assert "comfy preset is made for these LoRAs" in plain.stderr
    r = cli("generate", *official_args(d), *common, "--lora_path", pa, pb)  # strengths from the preset
    assert r.returncode == 0, r.stderr
    record = json.loads((d / "out.mp4.json").read_text())
    assert [(x["path"], x["alpha"], x["format"]) for x in record["loras"]] == [
        (str(pa), 0.8, "lightx2v/comfyui"),
        (str(pb), 1.0, "kohya"),
    ]
    s = record["sampling"]
    assert (s["solver"], s["steps"], s["shift"], s["guidance"]) == ("euler", 6, 5.0, 1.0)
    assert json.loads((tmp_path / "plain.mp4.json").read_text())["loras"] == []
    with_lora, _ = read_video(d / "out.mp4")
    without, _ = read_video(tmp_path / "plain.mp4")
    assert np.abs(with_lora.astype(int) - without.astype(int)).mean() > 1  # the LoRAs changed the model

    bad = cli("generate", *official_args(d), *common, "--lora_path", pa, "--lora_alpha", 0.5, 0.5)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "one strength per LoRA" in bad.stderr
