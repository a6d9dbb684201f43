"""Timestep embedding of the LatentSync UNet (SPEC 10.3, "time")."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_sinusoid(
    timesteps: torch.Tensor, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0, max_period: float = 10000.0
) -> torch.Tensor:
    """Sinusoidal embedding, always computed in float32 (the caller casts to the model dtype).

    Args:
        timesteps: [B] integer (or float) timesteps.
        dim: embedding width (even).
    Returns:
        [B, dim] float32: ``cos`` half first when ``flip_sin_to_cos`` (official), then ``sin``.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    exponent = exponent / (half - freq_shift)
    angles = timesteps[:, None].float() * torch.exp(exponent)[None, :]  # [B, half]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """``linear_1`` -> SiLU -> ``linear_2``: [B, in_dim] -> [B, time_embed_dim]."""

    def __init__(self, in_dim: int, time_embed_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, time_embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(sample)))
