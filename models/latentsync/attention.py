"""Spatial transformer of the LatentSync UNet: Transformer3DModel, BasicTransformerBlock, Attention, GEGLU.

SPEC 10.3 "Spatial transformer": per frame, GroupNorm(eps 1e-6) -> 1x1 ``proj_in`` -> one block of
self-attention over the h*w tokens, audio cross-attention (``attn2``, skipped when no audio is given) and a GEGLU
feed-forward -> 1x1 ``proj_out`` -> + residual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import fold_frames, unfold_frames


class Attention(nn.Module):
    """Multi-head attention with torch SDPA. ``to_q/to_k/to_v`` without bias, ``to_out.0`` with bias.

    Shapes: x [N, L, query_dim], context [N, S, context_dim] (self-attention when None) -> [N, L, query_dim].
    Head width = query_dim // heads; softmax scale 1/sqrt(head width).
    """

    def __init__(self, query_dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        if query_dim % heads:
            raise ValueError(f"query_dim {query_dim} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = query_dim // heads
        context_dim = context_dim if context_dim is not None else query_dim
        self.to_q = nn.Linear(query_dim, query_dim, bias=False)
        self.to_k = nn.Linear(context_dim, query_dim, bias=False)
        self.to_v = nn.Linear(context_dim, query_dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(query_dim, query_dim), nn.Dropout(0.0)])

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        return x.reshape(n, length, self.heads, self.head_dim).transpose(1, 2)  # [N,L,C] -> [N,heads,L,d]

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q = self._split_heads(self.to_q(x))
        k = self._split_heads(self.to_k(context))
        v = self._split_heads(self.to_v(context))
        out = F.scaled_dot_product_attention(q, k, v)  # [N,heads,L,d]
        n, _, length, _ = out.shape
        out = out.transpose(1, 2).reshape(n, length, self.heads * self.head_dim)  # [N,heads,L,d] -> [N,L,C]
        return self.to_out[1](self.to_out[0](out))


class GEGLU(nn.Module):
    """``proj`` C -> 2*inner, split into (value, gate) in that order, value * GELU(gate) (exact erf GELU)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """``net = [GEGLU(C -> 4C), Dropout, Linear(4C -> C)]`` (keys ``ff.net.0.proj``, ``ff.net.2``)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    """x += attn1(LN1 x); x += attn2(LN2 x, audio) (only with audio); x += FF(LN3 x).

    Shapes: x [b*f, h*w, C]; audio [b*f, 50, D] (row k paired with folded frame k).
    """

    def __init__(self, dim: int, heads: int, cross_attention_dim: int, add_audio_layer: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn1 = Attention(dim, heads)
        if add_audio_layer:
            self.norm2 = nn.LayerNorm(dim, eps=1e-5)
            self.attn2 = Attention(dim, heads, context_dim=cross_attention_dim)
        else:
            self.norm2 = None
            self.attn2 = None
        self.ff = FeedForward(dim)
        self.norm3 = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        if self.attn2 is not None and encoder_hidden_states is not None:
            x = self.attn2(self.norm2(x), encoder_hidden_states) + x
        x = self.ff(self.norm3(x)) + x
        return x


@dataclass
class Transformer3DModelOutput:
    """``sample``: [b, C, f, h, w]."""

    sample: torch.Tensor


class Transformer3DModel(nn.Module):
    """Per-frame spatial transformer ``norm, proj_in, transformer_blocks.0, proj_out``.

    Shapes: x [b,C,f,h,w], encoder_hidden_states [b*f, 50, D] or None -> [b,C,f,h,w].
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        cross_attention_dim: int,
        norm_num_groups: int = 32,
        add_audio_layer: bool = True,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, heads, cross_attention_dim, add_audio_layer) for _ in range(num_layers)]
        )
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None) -> Transformer3DModelOutput:
        frames = x.shape[2]
        x = fold_frames(x)  # [b,c,f,h,w] -> [b*f,c,h,w]
        bf, c, h, w = x.shape
        residual = x
        y = self.proj_in(self.norm(x))  # GroupNorm per frame
        y = y.permute(0, 2, 3, 1).reshape(bf, h * w, c)  # [b*f,c,h,w] -> [b*f,h*w,c]
        for block in self.transformer_blocks:
            y = block(y, encoder_hidden_states)
        y = y.reshape(bf, h, w, c).permute(0, 3, 1, 2)  # [b*f,h*w,c] -> [b*f,c,h,w]
        y = self.proj_out(y) + residual
        return Transformer3DModelOutput(sample=unfold_frames(y, frames))  # [b*f,c,h,w] -> [b,c,f,h,w]
