"""Per-frame ("inflated") convolutions, the clip-pooled ResnetBlock3D and the 3D down/up samplers (SPEC 10.3).

Layout everywhere is 5-D ``[b, c, f, h, w]``. Convolutions fold frames into the batch; GroupNorms of the resnets
and of the output normalise the 5-D tensor, i.e. their statistics are pooled over **all frames** of the clip
(pitfall 10.5.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """``[b,c,f,h,w] -> [b*f,c,h,w]`` (batch-major, frame-minor)."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def unfold_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """``[b*f,c,h,w] -> [b,c,f,h,w]``."""
    bf, c, h, w = x.shape
    return x.reshape(bf // frames, frames, c, h, w).permute(0, 2, 1, 3, 4)


class InflatedConv3d(nn.Conv2d):
    """A ``Conv2d`` applied to every frame: [b,c_in,f,h,w] -> [b,c_out,f,h',w'] (weights are 2-D)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        frames = x.shape[2]
        return unfold_frames(super().forward(fold_frames(x)), frames)


class ResnetBlock3D(nn.Module):
    """``norm1, conv1, time_emb_proj, norm2, conv2, [conv_shortcut]``.

    h = conv1(SiLU(GN1(x))) + time_emb_proj(SiLU(temb)); h = conv2(SiLU(GN2(h))); out = shortcut(x) + h.

    Shapes: x [b,c_in,f,h,w], temb [b,T] -> [b,c_out,f,h,w].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        groups: int = 32,
        eps: float = 1e-5,
        output_scale_factor: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.output_scale_factor = output_scale_factor
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = InflatedConv3d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps, affine=True)
        self.conv2 = InflatedConv3d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.conv_shortcut = (
            InflatedConv3d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)
            if in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # GroupNorm on 5-D: statistics over (c/g, f, h, w)
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]  # [b,c] -> [b,c,1,1,1]
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        out = shortcut + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out


class Downsample3D(nn.Module):
    """3x3 stride-2 conv per frame: [b,c,f,h,w] -> [b,c,f,ceil(h/2),ceil(w/2)]."""

    def __init__(self, channels: int, padding: int = 1) -> None:
        super().__init__()
        self.padding = padding
        self.conv = InflatedConv3d(channels, channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1), mode="constant", value=0)
        return self.conv(x)


class Upsample3D(nn.Module):
    """Nearest x2 in h and w (not f), then 3x3 conv per frame: [b,c,f,h,w] -> [b,c,f,2h,2w].

    When ``output_size`` (h, w) is given (latent sides not multiples of 8) the nearest resize targets that size.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = InflatedConv3d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, output_size: tuple[int, int] | None = None) -> torch.Tensor:
        frames = x.shape[2]
        dtype = x.dtype
        y = fold_frames(x)  # [b,c,f,h,w] -> [b*f,c,h,w]
        if dtype == torch.bfloat16:  # nearest upsampling kernels lack bf16 on some backends
            y = y.float()
        if output_size is None:
            y = F.interpolate(y, scale_factor=2.0, mode="nearest")
        else:
            y = F.interpolate(y, size=tuple(output_size), mode="nearest")
        y = y.to(dtype)
        return self.conv(unfold_frames(y, frames))
