"""`--model tiny-random`: all four components tiny, random and built in memory, so the whole generate path runs
on a CPU in seconds. Its output is untrained noise; it exists to check an installation end to end."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPVisionConfig, CLIPVisionModel, PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from scailflow.scail.model import SCAIL2Transformer, tiny_config

TINY_LABEL = "tiny-random (untrained random weights: the output is noise)"
_WORDS = (
    "a the person dancing walks runs jumps turns waves arms legs body woman man character video scene "
    "studio street light dark background moves slowly quickly left right camera wearing jacket dress shirt "
    "in on with and of to"
).split()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer built locally (pad 0, eos 1, unk 2), appending </s> like Wan's T5 tokenizer."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in _WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_components(seed: int = 0) -> dict:
    """transformer, vae, text_encoder, tokenizer, image_encoder: tiny and random (float32)."""
    torch.manual_seed(seed)
    clip_width = 64
    text_dim = 32
    tokenizer = tiny_tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=text_dim,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
            feed_forward_proj="gated-gelu",
            layer_norm_epsilon=1e-6,
            pad_token_id=0,
            eos_token_id=1,
        )
    ).eval()
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=clip_width,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=224,
            patch_size=14,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
        )
    ).eval()
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=16,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=2,
        attn_scales=[],
        temperal_downsample=[False, True, True],
    ).eval()
    cfg = SCAIL2Transformer.config_from_official(tiny_config(text_dim=text_dim))
    transformer = SCAIL2Transformer(**cfg, image_dim=clip_width).eval()
    return dict(
        transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, image_encoder=image_encoder
    )
