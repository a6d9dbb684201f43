"""Down, mid and up blocks of the LatentSync UNet (SPEC 10.3).

A "layer" is ``resnets.l`` -> (``attentions.l``) -> (``motion_modules.l``). Down blocks return their output and the
tuple of skips; up blocks pop one skip per layer (the **last** one) and concatenate it after the hidden state.
All tensors are 5-D ``[b, c, f, h, w]``; audio is ``[b*f, 50, D]`` or None; ``temb`` is ``[b, T]``.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import Transformer3DModel
from .motion_module import VanillaTemporalModule
from .resnet import Downsample3D, ResnetBlock3D, Upsample3D


class _LayeredBlock(nn.Module):
    """Shared layer logic for blocks holding ``resnets`` and optional ``attentions`` / ``motion_modules``."""

    resnets: nn.ModuleList
    attentions: nn.ModuleList | None
    motion_modules: nn.ModuleList | None

    def _build_layers(
        self,
        in_widths: list[int],
        out_channels: int,
        temb_channels: int,
        *,
        cross_attention: bool,
        motion: bool,
        heads: int,
        cross_attention_dim: int,
        groups: int,
        eps: float,
        add_audio_layer: bool,
        motion_kwargs: dict,
    ) -> None:
        # Registration order attentions -> resnets -> motion_modules mirrors the official state-dict order.
        if cross_attention:
            self.attentions = nn.ModuleList(
                [
                    Transformer3DModel(out_channels, heads, cross_attention_dim, groups, add_audio_layer)
                    for _ in in_widths
                ]
            )
        else:
            self.attentions = None
        self.resnets = nn.ModuleList(
            [ResnetBlock3D(w, out_channels, temb_channels, groups=groups, eps=eps) for w in in_widths]
        )
        if motion:
            self.motion_modules = nn.ModuleList([VanillaTemporalModule(out_channels, **motion_kwargs) for _ in in_widths])
        else:
            self.motion_modules = None

    def forward_layer(
        self, layer: int, x: torch.Tensor, temb: torch.Tensor, encoder_hidden_states: torch.Tensor | None
    ) -> torch.Tensor:
        """One layer: resnet -> spatial transformer -> temporal module. [b,c_in,f,h,w] -> [b,c_out,f,h,w]."""
        x = self.resnets[layer](x, temb)
        if self.attentions is not None:
            x = self.attentions[layer](x, encoder_hidden_states).sample
        if self.motion_modules is not None:
            x = self.motion_modules[layer](x)
        return x


class DownBlock3D(_LayeredBlock):
    """Down block; ``cross_attention=False`` gives the plain DownBlock3D, True the CrossAttnDownBlock3D."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        *,
        add_downsample: bool,
        cross_attention: bool = False,
        motion: bool = True,
        heads: int = 8,
        cross_attention_dim: int = 384,
        groups: int = 32,
        eps: float = 1e-5,
        downsample_padding: int = 1,
        add_audio_layer: bool = True,
        motion_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        widths = [in_channels] + [out_channels] * (num_layers - 1)
        self._build_layers(
            widths,
            out_channels,
            temb_channels,
            cross_attention=cross_attention,
            motion=motion,
            heads=heads,
            cross_attention_dim=cross_attention_dim,
            groups=groups,
            eps=eps,
            add_audio_layer=add_audio_layer,
            motion_kwargs=motion_kwargs or {},
        )
        self.downsamplers = (
            nn.ModuleList([Downsample3D(out_channels, padding=downsample_padding)]) if add_downsample else None
        )

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """x [b,c_in,f,h,w] -> (out [b,c_out,f,h',w'], skips: one per layer + the downsampler output)."""
        skips: tuple[torch.Tensor, ...] = ()
        for layer in range(len(self.resnets)):
            x = self.forward_layer(layer, x, temb, encoder_hidden_states)
            skips += (x,)
        if self.downsamplers is not None:
            for down in self.downsamplers:
                x = down(x)
            skips += (x,)
        return x, skips


class CrossAttnDownBlock3D(DownBlock3D):
    """DownBlock3D with a spatial transformer in every layer."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, cross_attention=True, **kwargs)


class UNetMidBlock3DCrossAttn(nn.Module):
    """``resnets.0`` -> ``attentions.0`` -> ``resnets.1`` (no temporal module in the official config)."""

    def __init__(
        self,
        channels: int,
        temb_channels: int,
        *,
        heads: int,
        cross_attention_dim: int,
        groups: int,
        eps: float,
        output_scale_factor: float = 1.0,
        add_audio_layer: bool = True,
        motion: bool = False,
        motion_kwargs: dict | None = None,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        self.attentions = nn.ModuleList(
            [Transformer3DModel(channels, heads, cross_attention_dim, groups, add_audio_layer) for _ in range(num_layers)]
        )
        self.resnets = nn.ModuleList(
            [
                ResnetBlock3D(channels, channels, temb_channels, groups, eps, output_scale_factor)
                for _ in range(num_layers + 1)
            ]
        )
        self.motion_modules = (
            nn.ModuleList([VanillaTemporalModule(channels, **(motion_kwargs or {})) for _ in range(num_layers)])
            if motion
            else None
        )

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[b,C,f,h,w] -> [b,C,f,h,w]."""
        x = self.resnets[0](x, temb)
        for i, (attention, resnet) in enumerate(zip(self.attentions, self.resnets[1:])):
            x = attention(x, encoder_hidden_states).sample
            if self.motion_modules is not None:
                x = self.motion_modules[i](x)
            x = resnet(x, temb)
        return x


class UpBlock3D(_LayeredBlock):
    """Up block; ``cross_attention=True`` gives CrossAttnUpBlock3D. Layer l input = cat(hidden, skip) on channels."""

    def __init__(
        self,
        in_channels: int,
        prev_output_channel: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        *,
        add_upsample: bool,
        cross_attention: bool = False,
        motion: bool = True,
        heads: int = 8,
        cross_attention_dim: int = 384,
        groups: int = 32,
        eps: float = 1e-5,
        add_audio_layer: bool = True,
        motion_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        widths = []
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            hidden_channels = prev_output_channel if i == 0 else out_channels
            widths.append(hidden_channels + skip_channels)
        self._build_layers(
            widths,
            out_channels,
            temb_channels,
            cross_attention=cross_attention,
            motion=motion,
            heads=heads,
            cross_attention_dim=cross_attention_dim,
            groups=groups,
            eps=eps,
            add_audio_layer=add_audio_layer,
            motion_kwargs=motion_kwargs or {},
        )
        self.upsamplers = nn.ModuleList([Upsample3D(out_channels)]) if add_upsample else None

    def forward(
        self,
        x: torch.Tensor,
        skips: tuple[torch.Tensor, ...],
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        upsample_size: tuple[int, int] | None = None,
        stash: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x [b,c,f,h,w], skips (one per layer, consumed from the end) -> [b,c_out,f,h',w'].

        ``stash``: when a dict is given, the hidden state entering the last layer (before the concat) is stored
        under ``"before_last_layer"`` (used by DeepCache).
        """
        n = len(self.resnets)
        if len(skips) != n:
            raise ValueError(f"up block expects {n} skip tensors, got {len(skips)}")
        for layer in range(n):
            if stash is not None and layer == n - 1:
                stash["before_last_layer"] = x
            x = torch.cat([x, skips[n - 1 - layer]], dim=1)  # pop the last skip: [b,c,..] + [b,c_s,..] -> [b,c+c_s,..]
            x = self.forward_layer(layer, x, temb, encoder_hidden_states)
        if self.upsamplers is not None:
            for up in self.upsamplers:
                x = up(x, upsample_size)
        return x


class CrossAttnUpBlock3D(UpBlock3D):
    """UpBlock3D with a spatial transformer in every layer."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, cross_attention=True, **kwargs)
