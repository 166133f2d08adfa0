"""The SCAIL-2 DiT on diffusers' Wan building blocks.

What is SCAIL-2's own lives here: three patch embeddings (video, driving/pose, 28-channel mask), the in-context token
sequence [additional refs][reference][video][driving], the SCAIL RoPE positions (offsets, 2x2-pooled driving
frequencies) and the unpatchify of the video slice. The repeated block, attention dispatch (backends, context
parallelism), the condition embedders and the head are diffusers' Wan modules, unchanged.

Official key names are mapped onto these modules in one place: `scail.checkpoint.official_to_module_key`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import WanTimeTextImageEmbedding, WanTransformerBlock

TEXT_LEN = 512
CLIP_DIM = 1280
FLAG_CHANNELS = 4
MASK_CHANNELS = 28
REF_OFFSET = 120  # RoPE offset of the reference (height, replacement mode) and the driving tokens (width)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[cos, sin] sinusoidal embedding of timesteps, computed in float64 as Wan does."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = torch.outer(t.to(torch.float64), freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


@dataclass(frozen=True)
class TokenLayout:
    """Where each part of the in-context sequence sits, and the latent grids it came from."""

    num_additional_refs: int
    frames: int  # latent frames T of the video
    height: int  # token grid h' (latent h / 2)
    width: int  # token grid w'
    replace: bool

    @property
    def plane(self) -> int:
        return self.height * self.width

    @property
    def video_start(self) -> int:
        return (self.num_additional_refs + 1) * self.plane

    @property
    def video_len(self) -> int:
        return self.frames * self.plane

    @property
    def driving_len(self) -> int:
        return self.frames * (self.height // 2) * (self.width // 2)

    @property
    def total(self) -> int:
        return self.video_start + self.video_len + self.driving_len


class SCAIL2RotaryPosEmbed(nn.Module):
    """SCAIL RoPE: Wan's 3-axis complex rotary embedding with SCAIL's per-part offsets.

    Returns (cos, sin), each [1, S, 1, head_dim] with every value repeated for its (even, odd) pair, the format
    diffusers' Wan attention processor applies. Angles are computed in float64.
    """

    def __init__(self, head_dim: int, max_positions: int = 8192, theta: float = 10000.0):
        super().__init__()
        pairs = head_dim // 2
        self.axis_pairs = (pairs - 2 * (pairs // 3), pairs // 3, pairs // 3)
        inv = [torch.pow(theta, -torch.arange(n, dtype=torch.float64) / n) for n in self.axis_pairs]
        self.register_buffer("inv_freq", torch.cat(inv), persistent=False)
        self.max_positions = max_positions

    def _angles(self, t: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Angles [N, pairs] for integer positions (t, y, x), each [N]."""
        nt, nh, nw = self.axis_pairs
        pos = torch.cat([t[:, None].expand(-1, nt), y[:, None].expand(-1, nh), x[:, None].expand(-1, nw)], 1)
        if pos.max() >= self.max_positions:
            raise ValueError(f"RoPE position {int(pos.max())} exceeds the table of {self.max_positions}")
        return pos.to(torch.float64) * self.inv_freq.to(pos.device)

    def _grid(self, t0: int, frames: int, h: int, w: int, dy: int, dx: int, device) -> tuple[torch.Tensor, ...]:
        t, y, x = torch.meshgrid(
            torch.arange(t0, t0 + frames, device=device),
            torch.arange(dy, dy + h, device=device),
            torch.arange(dx, dx + w, device=device),
            indexing="ij",
        )
        return t.flatten(), y.flatten(), x.flatten()

    def cos_sin_pairs(self, layout: TokenLayout, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) per token and complex pair, each [S, pairs] float64."""
        K, T, h, w = layout.num_additional_refs, layout.frames, layout.height, layout.width
        ref_dy = REF_OFFSET if layout.replace else 0
        video_t0 = K if layout.replace else K + 1
        parts = []
        # additional refs (time 0..K-1) and the reference (time K): one frame each
        ang = self._angles(*self._grid(0, K + 1, h, w, ref_dy, 0, device))
        parts.append((ang.cos(), ang.sin()))
        ang = self._angles(*self._grid(video_t0, T, h, w, 0, 0, device))
        parts.append((ang.cos(), ang.sin()))
        # driving: the full-size grid shifted in width, then 2x2 average-pooled (real and imaginary apart)
        ang = self._angles(*self._grid(video_t0, T, h, w, 0, REF_OFFSET, device))
        pooled = []
        for v in (ang.cos(), ang.sin()):
            v = v.reshape(T, h, w, -1).permute(0, 3, 1, 2)
            v = F.avg_pool2d(v, 2).permute(0, 2, 3, 1).reshape(-1, v.shape[1])
            pooled.append(v)
        parts.append(tuple(pooled))
        cos = torch.cat([p[0] for p in parts])
        sin = torch.cat([p[1] for p in parts])
        return cos, sin

    def forward(self, layout: TokenLayout, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.cos_sin_pairs(layout, device)
        as_block = lambda v: v.repeat_interleave(2, dim=-1).float()[None, :, None, :]  # noqa: E731
        return as_block(cos), as_block(sin)


class SCAIL2ConditionEmbedding(WanTimeTextImageEmbedding):
    """Wan's time/text/CLIP embedders with the sinusoid in float64 and the time path in float32."""

    def forward(self, timestep, encoder_hidden_states, encoder_hidden_states_image=None, timestep_seq_len=None):
        freq_dim = self.time_embedder.linear_1.in_features
        sinus = sinusoidal_embedding(timestep, freq_dim)
        with torch.autocast(device_type=sinus.device.type, enabled=False):
            w = self.time_embedder.linear_1.weight
            temb = self.time_embedder(sinus.to(torch.float32 if w.dtype != torch.float64 else w.dtype)).float()
            timestep_proj = self.time_proj(self.act_fn(temb.to(self.time_proj.weight.dtype))).float()
        text = self.text_embedder(encoder_hidden_states)
        image = self.image_embedder(encoder_hidden_states_image) if encoder_hidden_states_image is not None else None
        return temb, timestep_proj, text, image


class SCAIL2Transformer(ModelMixin, ConfigMixin, CacheMixin):
    """SCAIL-2 DiT: Wan 2.1 I2V blocks over the SCAIL in-context token sequence.

    Config keys follow diffusers' Wan names; `from_official` accepts the official config keys (dim, num_heads,
    num_layers, ffn_dim, text_dim, freq_dim, in_dim, mask_dim, out_dim, eps) and official-named weights.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["WanTransformerBlock"]
    _keep_in_fp32_modules = ["time_embedder", "scale_shift_table", "norm1", "norm2", "norm3", "norm_out"]
    _repeated_blocks = ["WanTransformerBlock"]
    # Sequence parallelism (diffusers context parallel): split the token sequence and its RoPE entering the
    # blocks, gather the head's output. Cross-attention context (769 tokens) stays whole on every rank.
    _cp_plan = {
        "rope": {
            0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
            1: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
        },
        "blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False)},
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = 20,
        mask_channels: int = MASK_CHANNELS,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        eps: float = 1e-6,
        image_dim: int = CLIP_DIM,
        text_len: int = TEXT_LEN,
        rope_max_positions: int = 8192,
    ):
        super().__init__()
        dim = num_attention_heads * attention_head_dim
        self.rope = SCAIL2RotaryPosEmbed(attention_head_dim, rope_max_positions)
        self.patch_embedding = nn.Conv3d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.patch_embedding_pose = nn.Conv3d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.patch_embedding_mask = nn.Conv3d(mask_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.condition_embedder = SCAIL2ConditionEmbedding(
            dim=dim, time_freq_dim=freq_dim, time_proj_dim=6 * dim, text_embed_dim=text_dim, image_embed_dim=image_dim
        )
        self.blocks = nn.ModuleList(
            WanTransformerBlock(dim, ffn_dim, num_attention_heads, "rms_norm_across_heads", True, eps, dim)
            for _ in range(num_layers)
        )
        self.norm_out = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.proj_out = nn.Linear(dim, out_channels * math.prod(patch_size))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)
        self.gradient_checkpointing = False

    # ----------------------------------------------------------------- construction
    @classmethod
    def config_from_official(cls, config: dict) -> dict:
        """Map official config keys (dim, num_heads, ...) onto this class's config."""
        dim, heads = int(config["dim"]), int(config["num_heads"])
        return dict(
            patch_size=tuple(config.get("patch_size", (1, 2, 2))),
            num_attention_heads=heads,
            attention_head_dim=dim // heads,
            in_channels=int(config.get("in_dim", 20)),
            mask_channels=int(config.get("mask_dim", MASK_CHANNELS)),
            out_channels=int(config.get("out_dim", 16)),
            text_dim=int(config.get("text_dim", 4096)),
            freq_dim=int(config.get("freq_dim", 256)),
            ffn_dim=int(config["ffn_dim"]),
            num_layers=int(config["num_layers"]),
            eps=float(config.get("eps", 1e-6)),
            text_len=int(config.get("text_len", TEXT_LEN)),
        )

    @classmethod
    def from_official(
        cls, state_dict: dict[str, torch.Tensor], config: dict, *, device=None, dtype: torch.dtype | None = None
    ) -> SCAIL2Transformer:
        """Build from an official-named state dict and official config keys; strict (names the missing/extra key)."""
        from scailflow.scail.checkpoint import load_official_state_dict

        with torch.device("meta"):
            model = cls(**cls.config_from_official(config))
        load_official_state_dict(model, state_dict, device=device, dtype=dtype)
        return model

    # ----------------------------------------------------------------- the sequence
    @staticmethod
    def _ones_like_flags(latent: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = latent.shape
        return latent.new_ones(b, FLAG_CHANNELS, t, h, w)

    def _embed(self, conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
        return conv(x.to(conv.weight.dtype)).flatten(2).transpose(1, 2)

    def embed_tokens(
        self,
        x,
        ref_latents,
        ref_masks,
        pose_latents,
        driving_masks,
        history_mask=None,
        additional_ref_latents=None,
        additional_ref_masks=None,
        replace_flag=False,
    ):
        """The token sequence entering block 0, [B, S, dim], and its layout."""
        b, _, T, h, w = x.shape
        if history_mask is None:
            history_mask = x.new_zeros(b, FLAG_CHANNELS, T, h, w)
        noisy = torch.cat([x, history_mask.to(x.dtype)], 1)
        ref = torch.cat([ref_latents, self._ones_like_flags(ref_latents)], 1)
        if ref_masks.shape[2] == 1:  # reference mask frame only: zeros for the video frames
            ref_masks = torch.cat([ref_masks, ref_masks.new_zeros(b, ref_masks.shape[1], T, h, w)], 2)
        video = self._embed(self.patch_embedding, torch.cat([ref, noisy], 2))
        video = video + self._embed(self.patch_embedding_mask, ref_masks)
        pose = torch.cat([pose_latents, self._ones_like_flags(pose_latents)], 1)
        driving = self._embed(self.patch_embedding_pose, pose)
        driving = driving + self._embed(self.patch_embedding_mask, driving_masks)
        parts = []
        K = 0
        if additional_ref_latents is not None and additional_ref_latents.shape[2] > 0:
            K = additional_ref_latents.shape[2]
            if additional_ref_masks is None or additional_ref_masks.shape[2] != K:
                raise ValueError("additional_ref_masks must pair one mask with each additional reference")
            extra = torch.cat([additional_ref_latents, self._ones_like_flags(additional_ref_latents)], 1)
            parts.append(
                self._embed(self.patch_embedding, extra) + self._embed(self.patch_embedding_mask, additional_ref_masks)
            )
        parts += [video, driving]
        p_t, p_h, p_w = self.config.patch_size
        layout = TokenLayout(K, T // p_t, h // p_h, w // p_w, bool(replace_flag))
        tokens = torch.cat(parts, 1)
        assert tokens.shape[1] == layout.total, (tokens.shape, layout)
        return tokens, layout

    def embed_context(self, t, context, clip_fea):
        """(e [B, dim] fp32, e0 [B, 6, dim] fp32, cross-attention context [B, 257 + 512, dim])."""
        if isinstance(context, (list, tuple)):
            context = torch.stack([F.pad(c, (0, 0, 0, self.config.text_len - c.shape[0])) for c in context])
        elif context.shape[1] < self.config.text_len:
            context = F.pad(context, (0, 0, 0, self.config.text_len - context.shape[1]))
        e, e0, text, image = self.condition_embedder(t, context, clip_fea)
        return e, e0.unflatten(1, (6, -1)), torch.cat([image.to(text.dtype), text], 1)

    def unpatchify(self, out: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """Head output of the video slice, [B, T*h'*w', pt*ph*pw*C] -> [B, C, T, h, w]."""
        p_t, p_h, p_w = self.config.patch_size
        b = out.shape[0]
        v = out[:, layout.video_start : layout.video_start + layout.video_len]
        v = v.reshape(b, layout.frames, layout.height, layout.width, p_t, p_h, p_w, -1)
        return v.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(
            b, -1, layout.frames * p_t, layout.height * p_h, layout.width * p_w
        )

    def forward(
        self,
        x,
        t,
        context,
        clip_fea,
        ref_latents,
        ref_masks,
        pose_latents,
        driving_masks,
        replace_flag: bool = False,
        history_mask=None,
        additional_ref_latents=None,
        additional_ref_masks=None,
    ) -> torch.Tensor:
        """Predict the flow for the noisy video latent `x` [B, 16, T, h, w]; returns [B, 16, T, h, w] in float32.

        ref_latents [B,16,1,h,w]; ref_masks [B,28,1 or 1+T,h,w]; pose_latents [B,16,T,h/2,w/2];
        driving_masks [B,28,T,h/2,w/2]; history_mask [B,4,T,h,w] (ones on re-encoded history frames);
        additional_ref_latents / _masks [B,16|28,K,h,w]; context [B,L<=512,text_dim] or a list of [L_i,text_dim];
        clip_fea [B,257,1280]; t [B].
        """
        tokens, layout = self.embed_tokens(
            x,
            ref_latents,
            ref_masks,
            pose_latents,
            driving_masks,
            history_mask,
            additional_ref_latents,
            additional_ref_masks,
            replace_flag,
        )
        rotary = self.rope(layout, device=tokens.device)
        e, e0, ctx = self.embed_context(t, context, clip_fea)
        hidden = tokens.contiguous()
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden = self._gradient_checkpointing_func(block, hidden, ctx, e0, rotary)
            else:
                hidden = block(hidden, ctx, e0, rotary)
        shift, scale = (self.scale_shift_table.float() + e.unsqueeze(1)).chunk(2, dim=1)
        hidden = (self.norm_out(hidden.float()) * (1 + scale) + shift).type_as(hidden)
        out = self.proj_out(hidden)
        return self.unpatchify(out, layout).float()


def tiny_config(**overrides) -> dict:
    """Official config keys of a tiny SCAIL-2 (the conformance model's size) for tests and `--model tiny-random`."""
    cfg = dict(
        dim=64,
        num_heads=4,
        num_layers=2,
        ffn_dim=128,
        text_dim=32,
        freq_dim=256,
        in_dim=20,
        mask_dim=28,
        out_dim=16,
        eps=1e-6,
    )
    cfg.update(overrides)
    return cfg


OFFICIAL_14B_CONFIG = dict(
    dim=5120,
    num_heads=40,
    num_layers=40,
    ffn_dim=13824,
    text_dim=4096,
    freq_dim=256,
    in_dim=20,
    mask_dim=28,
    out_dim=16,
    eps=1e-6,
)


__all__: Sequence[str] = [
    "SCAIL2Transformer",
    "SCAIL2RotaryPosEmbed",
    "TokenLayout",
    "tiny_config",
    "OFFICIAL_14B_CONFIG",
    "sinusoidal_embedding",
]
