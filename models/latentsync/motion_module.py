"""Vanilla temporal ("motion") module: attention over the frames of each spatial position (SPEC 10.3).

Key layout: ``temporal_transformer.{norm, proj_in, transformer_blocks.0.{attention_blocks.k, norms.k, ff, ff_norm},
proj_out}`` with a persistent ``attention_blocks.k.pos_encoder.pe`` buffer of shape [1, max_len, C].
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .attention import Attention, FeedForward
from .config import TEMPORAL_GROUPS
from .resnet import fold_frames, unfold_frames


class PositionalEncoding(nn.Module):
    """Sinusoidal table ``pe`` [1, max_len, C]: even channels sin(p*d_j), odd channels cos(p*d_j)."""

    def __init__(self, d_model: int, max_len: int = 24) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # [max_len, 1]
        div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(1, max_len, d_model)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe, persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, f, C] -> x + pe[:, :f]; f must not exceed max_len."""
        frames = x.shape[1]
        if frames > self.pe.shape[1]:
            raise ValueError(f"clip has {frames} frames but the temporal position table holds {self.pe.shape[1]}")
        return x + self.pe[:, :frames].to(x.dtype)


class TemporalAttention(Attention):
    """Self-attention over frames; the positional table is added to the (normed) input only.

    Shapes: x [b*f, h*w, C] -> [b*f, h*w, C].
    """

    def __init__(self, dim: int, heads: int, position_encoding: bool = True, max_len: int = 24) -> None:
        super().__init__(dim, heads)
        self.pos_encoder = PositionalEncoding(dim, max_len) if position_encoding else None

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:  # type: ignore[override]
        bf, d, c = x.shape
        b = bf // frames
        y = x.reshape(b, frames, d, c).permute(0, 2, 1, 3).reshape(b * d, frames, c)  # (b f) d c -> (b d) f c
        if self.pos_encoder is not None:
            y = self.pos_encoder(y)
        y = super().forward(y)
        return y.reshape(b, d, frames, c).permute(0, 2, 1, 3).reshape(bf, d, c)  # (b d) f c -> (b f) d c


class TemporalTransformerBlock(nn.Module):
    """For each attention block k: x += attention_blocks.k(norms.k(x)); then x += ff(ff_norm(x))."""

    def __init__(self, dim: int, heads: int, num_attention_blocks: int, position_encoding: bool, max_len: int) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalAttention(dim, heads, position_encoding, max_len) for _ in range(num_attention_blocks)]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(num_attention_blocks)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x), frames) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3DModel(nn.Module):
    """``norm`` (GroupNorm 32, eps 1e-6, per frame) -> ``proj_in`` Linear -> blocks -> ``proj_out`` -> + residual."""

    def __init__(
        self, channels: int, heads: int, num_layers: int, num_attention_blocks: int, position_encoding: bool, max_len: int
    ) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(TEMPORAL_GROUPS, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [
                TemporalTransformerBlock(channels, heads, num_attention_blocks, position_encoding, max_len)
                for _ in range(num_layers)
            ]
        )
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [b,c,f,h,w] -> [b,c,f,h,w]."""
        frames = x.shape[2]
        x = fold_frames(x)  # [b,c,f,h,w] -> [b*f,c,h,w]
        bf, c, h, w = x.shape
        residual = x
        y = self.norm(x).permute(0, 2, 3, 1).reshape(bf, h * w, c)  # [b*f,c,h,w] -> [b*f,h*w,c]
        y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y, frames)
        y = self.proj_out(y)
        y = y.reshape(bf, h, w, c).permute(0, 3, 1, 2) + residual  # [b*f,h*w,c] -> [b*f,c,h,w]
        return unfold_frames(y, frames)  # [b*f,c,h,w] -> [b,c,f,h,w]


class VanillaTemporalModule(nn.Module):
    """``motion_modules.l``: wraps ``temporal_transformer``. Shapes: [b,c,f,h,w] -> [b,c,f,h,w]."""

    def __init__(
        self,
        in_channels: int,
        num_attention_heads: int = 8,
        num_transformer_block: int = 1,
        attention_block_types: tuple[str, ...] | list[str] = ("Temporal_Self", "Temporal_Self"),
        temporal_position_encoding: bool = True,
        temporal_position_encoding_max_len: int = 24,
        temporal_attention_dim_div: int = 1,
        zero_initialize: bool = True,
    ) -> None:
        super().__init__()
        if temporal_attention_dim_div != 1:
            raise ValueError(f"temporal_attention_dim_div {temporal_attention_dim_div} is not supported (only 1)")
        self.temporal_transformer = TemporalTransformer3DModel(
            in_channels,
            num_attention_heads,
            num_transformer_block,
            len(attention_block_types),
            temporal_position_encoding,
            temporal_position_encoding_max_len,
        )
        if zero_initialize:
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal_transformer(x)
