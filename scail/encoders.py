"""Wan's VAE, UMT5 text encoder and CLIP ViT-H/14 image tower on library classes, loaded from Wan-format files.

- VAE: diffusers `AutoencoderKLWan`; keys converted by diffusers' own `convert_wan_vae_to_diffusers`.
- Text: transformers `UMT5EncoderModel` from `models_t5_umt5-xxl-enc-bf16.pth` (keys mapped here) + tokenizer folder.
- Image: transformers `CLIPVisionModel` from the open-clip visual weights (keys mapped here); Wan's preprocessing
  (squash to 224 bicubic, no crop) and the penultimate block's output (257 tokens, no post-norm).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

from scailflow.errors import InputError
from scailflow.scail.checkpoint import rename

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ------------------------------------------------------------------------------------------------ VAE
def wan_vae(base_dim: int = 96) -> AutoencoderKLWan:
    """The Wan 2.1 VAE of the official release's shape (`base_dim` 96; tests build narrower ones)."""
    return AutoencoderKLWan(
        base_dim=base_dim,
        z_dim=16,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=2,
        attn_scales=[],
        temperal_downsample=[False, True, True],
    )


def vae_from_wan_state_dict(sd: dict[str, torch.Tensor]) -> AutoencoderKLWan:
    """`Wan2.1_VAE.pth` contents -> diffusers AutoencoderKLWan (strict)."""
    if "encoder.conv1.weight" not in sd:
        raise InputError("not a Wan 2.1 VAE state dict (no encoder.conv1.weight)")
    vae = wan_vae(sd["encoder.conv1.weight"].shape[0])
    converted = convert_wan_vae_to_diffusers(dict(sd))
    vae.load_state_dict(converted, strict=True)
    return vae.eval()


def vae_stats(vae, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32, device=ref.device).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32, device=ref.device).view(1, -1, 1, 1, 1)
    return mean, std


@torch.no_grad()
def vae_encode(vae: AutoencoderKLWan, video: torch.Tensor) -> torch.Tensor:
    """[B, 3, T, H, W] in [-1, 1] -> normalised posterior means [B, 16, (T-1)//4+1, H/8, W/8] (float32)."""
    dtype = next(vae.parameters()).dtype
    mu = vae.encode(video.to(dtype)).latent_dist.mode().float()
    mean, std = vae_stats(vae, mu)
    return (mu - mean) / std


@torch.no_grad()
def vae_decode(vae: AutoencoderKLWan, z: torch.Tensor, progress=None) -> torch.Tensor:
    """Normalised latents -> [B, 3, T, H, W] clamped to [-1, 1] (float32).

    `progress(done, total)` counts decoded frames: diffusers decodes one latent frame (4 video frames, the first 1)
    per call of `vae.decoder` (per tile with tiling), so a forward hook on it sees the loop go by."""
    mean, std = vae_stats(vae, z)
    dtype = next(vae.parameters()).dtype
    hook = None
    if progress is not None:
        frames = 4 * (z.shape[2] - 1) + 1
        calls = z.shape[2] * _decode_tiles(vae, z.shape[3], z.shape[4])
        seen = [0]

        def count(module, args, output) -> None:
            seen[0] += 1
            progress(min(frames, round(frames * seen[0] / calls)), frames)

        progress(0, frames)
        hook = vae.decoder.register_forward_hook(count)
    try:
        return vae.decode((z.float() * std + mean).to(dtype)).sample.float().clamp(-1, 1)
    finally:
        if hook is not None:
            hook.remove()


def _decode_tiles(vae: AutoencoderKLWan, height: int, width: int) -> int:
    """How many spatial tiles diffusers' Wan decode uses for a latent of this size (1 without tiling)."""
    ratio = vae.spatial_compression_ratio
    if not vae.use_tiling or (
        width <= vae.tile_sample_min_width // ratio and height <= vae.tile_sample_min_height // ratio
    ):
        return 1
    stride_h, stride_w = vae.tile_sample_stride_height // ratio, vae.tile_sample_stride_width // ratio
    return -(-height // stride_h) * -(-width // stride_w)


# ------------------------------------------------------------------------------------------------ T5
_T5_RULES = [
    (r"^token_embedding\.weight$", "shared.weight"),
    (r"^norm\.weight$", "encoder.final_layer_norm.weight"),
    (r"^blocks\.(\d+)\.norm1\.weight$", r"encoder.block.\1.layer.0.layer_norm.weight"),
    (r"^blocks\.(\d+)\.attn\.([qkvo])\.weight$", r"encoder.block.\1.layer.0.SelfAttention.\2.weight"),
    (
        r"^blocks\.(\d+)\.pos_embedding\.embedding\.weight$",
        r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias.weight",
    ),
    (r"^blocks\.(\d+)\.norm2\.weight$", r"encoder.block.\1.layer.1.layer_norm.weight"),
    (r"^blocks\.(\d+)\.ffn\.gate\.0\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wi_0.weight"),
    (r"^blocks\.(\d+)\.ffn\.fc1\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wi_1.weight"),
    (r"^blocks\.(\d+)\.ffn\.fc2\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wo.weight"),
]


def t5_key_map(wan_key: str) -> list[str]:
    """Wan T5 key -> UMT5EncoderModel key(s) (the token embedding is tied to encoder.embed_tokens)."""
    new = rename(wan_key, _T5_RULES)
    if new is None:
        raise InputError(f"unexpected key in Wan T5 checkpoint: {wan_key}")
    return [new, "encoder.embed_tokens.weight"] if new == "shared.weight" else [new]


def umt5_config_from_wan(sd: dict[str, torch.Tensor]) -> UMT5Config:
    vocab, d_model = sd["token_embedding.weight"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    buckets, heads = sd["blocks.0.pos_embedding.embedding.weight"].shape
    return UMT5Config(
        vocab_size=vocab,
        d_model=d_model,
        d_kv=sd["blocks.0.attn.q.weight"].shape[0] // heads,
        d_ff=sd["blocks.0.ffn.fc1.weight"].shape[0],
        num_layers=layers,
        num_heads=heads,
        relative_attention_num_buckets=buckets,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
        tie_word_embeddings=False,
    )


def umt5_from_wan_state_dict(sd: dict[str, torch.Tensor], attn_implementation: str = "sdpa") -> UMT5EncoderModel:
    """`models_t5_umt5-xxl-enc-bf16.pth` contents -> transformers UMT5EncoderModel (strict)."""
    if "token_embedding.weight" not in sd:
        raise InputError("not a Wan T5 encoder state dict (no token_embedding.weight)")
    config = umt5_config_from_wan(sd)
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    model.config._attn_implementation = attn_implementation
    dtype = sd["token_embedding.weight"].dtype
    mapped = {}
    for k, v in sd.items():
        for name in t5_key_map(k):
            mapped[name] = v
    result = model.load_state_dict(mapped, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise InputError(
            f"T5 checkpoint does not match: missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}"
        )
    model.encoder.embed_tokens = model.shared
    return model.to(dtype).eval()


@torch.no_grad()
def encode_text(model: UMT5EncoderModel, tokenizer, prompts: list[str], text_len: int = 512) -> list[torch.Tensor]:
    """Wan's text encoding: pad to `text_len`, run with the mask, keep each prompt's own tokens [L_i, dim]."""
    device = next(model.parameters()).device
    tok = tokenizer(
        prompts,
        padding="max_length",
        max_length=text_len,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    ids, mask = tok.input_ids.to(device), tok.attention_mask.to(device)
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    lens = mask.sum(1).tolist()
    return [hidden[i, : int(n)].float() for i, n in enumerate(lens)]


# ------------------------------------------------------------------------------------------------ CLIP
_CLIP_RULES = [
    (r"^visual\.patch_embedding\.weight$", "embeddings.patch_embedding.weight"),
    (r"^visual\.pre_norm\.(weight|bias)$", r"pre_layrnorm.\1"),
    (r"^visual\.post_norm\.(weight|bias)$", r"post_layernorm.\1"),  # unused by Wan (penultimate block)
    (r"^visual\.transformer\.(\d+)\.norm([12])\.(weight|bias)$", r"encoder.layers.\1.layer_norm\2.\3"),
    (r"^visual\.transformer\.(\d+)\.attn\.proj\.(weight|bias)$", r"encoder.layers.\1.self_attn.out_proj.\2"),
    (r"^visual\.transformer\.(\d+)\.mlp\.0\.(weight|bias)$", r"encoder.layers.\1.mlp.fc1.\2"),
    (r"^visual\.transformer\.(\d+)\.mlp\.2\.(weight|bias)$", r"encoder.layers.\1.mlp.fc2.\2"),
]
_CLIP_DROP = re.compile(r"^(textual\.|log_scale$|visual\.head$)")


def clip_state_dict_from_wan(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan/open-clip `visual.*` keys -> CLIPVisionModel keys (text tower and projection head dropped)."""
    out = {}
    for k, v in sd.items():
        if _CLIP_DROP.match(k):
            continue
        if k == "visual.cls_embedding":
            out["embeddings.class_embedding"] = v.reshape(-1)
        elif k == "visual.pos_embedding":
            out["embeddings.position_embedding.weight"] = v.reshape(v.shape[-2], v.shape[-1])
        elif m := re.match(r"^visual\.transformer\.(\d+)\.attn\.to_qkv\.(weight|bias)$", k):
            i, leaf = m.groups()
            for p, t in zip("qkv", torch.chunk(v, 3, dim=0)):
                out[f"encoder.layers.{i}.self_attn.{p}_proj.{leaf}"] = t
        else:
            new = rename(k, _CLIP_RULES)
            if new is None:
                raise InputError(f"unexpected key in CLIP checkpoint: {k}")
            out[new] = v
    width = out["embeddings.patch_embedding.weight"].shape[0]
    out.setdefault("post_layernorm.weight", torch.ones(width))
    out.setdefault("post_layernorm.bias", torch.zeros(width))
    return out


def clip_from_wan_state_dict(sd: dict[str, torch.Tensor], num_heads: int | None = None) -> CLIPVisionModel:
    """Open-clip ViT-H/14 visual weights (Wan format) -> transformers CLIPVisionModel (strict)."""
    if "visual.patch_embedding.weight" not in sd:
        raise InputError("not a Wan/open-clip CLIP visual state dict (no visual.patch_embedding.weight)")
    width, _, patch, _ = sd["visual.patch_embedding.weight"].shape
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("visual.transformer."))
    heads = num_heads or (width // 80 if width % 80 == 0 else width // 16)  # ViT-H/14: 1280 / 16 heads of 80
    tokens = sd["visual.pos_embedding"].shape[-2]
    config = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=sd["visual.transformer.0.mlp.0.weight"].shape[0],
        num_hidden_layers=layers,
        num_attention_heads=heads,
        patch_size=patch,
        image_size=int(round((tokens - 1) ** 0.5)) * patch,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    with torch.device("meta"):
        model = CLIPVisionModel(config)
    model.load_state_dict(clip_state_dict_from_wan(sd), strict=True, assign=True)
    emb = model.embeddings  # non-persistent buffer: not in the state dict, still on meta
    emb.register_buffer("position_ids", torch.arange(emb.num_positions).expand((1, -1)), persistent=False)
    return model.eval()


def clip_pixel_values(image: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Wan's CLIP preprocessing: [B, 3, H, W] in [-1, 1] squashed to size x size (bicubic), CLIP-normalised."""
    x = F.interpolate(image.float(), size=(size, size), mode="bicubic", align_corners=False)
    x = x * 0.5 + 0.5
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def encode_image(model: CLIPVisionModel, image: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> penultimate-block features [B, 257, width] (no post-norm)."""
    dtype = next(model.parameters()).dtype
    pixels = clip_pixel_values(image, model.config.image_size).to(dtype)
    out = model(pixel_values=pixels, output_hidden_states=True)
    return out.hidden_states[-2].float()
