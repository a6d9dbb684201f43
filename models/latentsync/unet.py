"""LatentSync ``UNet3DConditionModel`` (SPEC section 10) with optional DeepCache (SPEC section 8).

Input ``[B, 13, f, h, w]`` = [noisy latents 4 | mask 1 | masked-image latents 4 | reference latents 4], timestep
and whisper audio features ``[B*f, 50, 384]``; output the predicted noise ``[B, 4, f, h, w]``.
Module paths equal the official checkpoint's key names (1246 entries at full size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import load_unet_state_dict, read_official_unet_checkpoint, read_pretrained, save_model
from .config import UNet3DConfig
from .embeddings import TimestepEmbedding, timestep_sinusoid
from .resnet import InflatedConv3d
from .unet_blocks import CrossAttnDownBlock3D, CrossAttnUpBlock3D, DownBlock3D, UNetMidBlock3DCrossAttn, UpBlock3D


@dataclass
class UNetOutput:
    """``sample``: predicted noise [B, out_channels, f, h, w] in the input dtype."""

    sample: torch.Tensor


class DeepCacheState:
    """Per-block DeepCache state (DeepCache 0.1.1 ``DeepCacheSDHelper``, uniform mode, branch 0).

    Create one per 16-frame block and pass it with the step index on every denoising step. Steps with
    ``step_index % cache_interval == 0`` run the full UNet and remember the hidden state that enters the last
    layer of the last up block; the other steps recompute only the time embedding, ``conv_in``, that last layer
    and the output head. (The helper caches the outputs of every down/mid/up block and of up-block-3 layers 0-1;
    on a cached step they only feed that hidden state, so storing it alone is equivalent and saves memory.)
    """

    def __init__(self, cache_interval: int = 3) -> None:
        if cache_interval < 1:
            raise ValueError(f"cache_interval must be >= 1, got {cache_interval}")
        self.cache_interval = cache_interval
        self.reset()

    def reset(self) -> None:
        """Forget the cache (call between blocks when reusing one state)."""
        self.hidden: torch.Tensor | None = None  # [B, C_prev, f, h, w] entering the last layer of the last up block
        self.next_step = 0
        self.full_steps = 0
        self.cached_steps = 0

    def is_full_step(self, step_index: int) -> bool:
        return step_index % self.cache_interval == 0


class UNet3DConditionModel(nn.Module):
    """Audio-conditioned video UNet of LatentSync 1.5 / 1.6; ``__init__`` takes only the config."""

    def __init__(self, config: UNet3DConfig | None = None) -> None:
        super().__init__()
        config = config if config is not None else UNet3DConfig()
        self.config = config
        ch = config.block_out_channels
        temb_dim = config.time_embed_dim
        heads = config.attention_head_dim  # number of heads (pitfall 10.5.1)
        common = dict(
            heads=heads,
            cross_attention_dim=config.cross_attention_dim,
            groups=config.norm_num_groups,
            eps=config.norm_eps,
            add_audio_layer=config.add_audio_layer,
            motion_kwargs=dict(config.motion_module_kwargs),
        )

        self.conv_in = InflatedConv3d(config.in_channels, ch[0], kernel_size=3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb_dim)

        down_classes = {"CrossAttnDownBlock3D": CrossAttnDownBlock3D, "DownBlock3D": DownBlock3D}
        self.down_blocks = nn.ModuleList()
        out_c = ch[0]
        for i, kind in enumerate(config.down_block_types):
            in_c, out_c = out_c, ch[i]
            self.down_blocks.append(
                down_classes[kind](
                    in_c,
                    out_c,
                    temb_dim,
                    config.layers_per_block,
                    add_downsample=i < len(ch) - 1,
                    motion=config.down_has_motion(i),
                    downsample_padding=config.downsample_padding,
                    **common,
                )
            )

        up_classes = {"CrossAttnUpBlock3D": CrossAttnUpBlock3D, "UpBlock3D": UpBlock3D}
        rev = list(reversed(ch))
        self.up_blocks = nn.ModuleList()
        out_c = rev[0]
        for i, kind in enumerate(config.up_block_types):
            prev_c, out_c = out_c, rev[i]
            in_c = rev[min(i + 1, len(ch) - 1)]
            self.up_blocks.append(
                up_classes[kind](
                    in_c,
                    prev_c,
                    out_c,
                    temb_dim,
                    config.layers_per_block + 1,
                    add_upsample=i < len(ch) - 1,
                    motion=config.up_has_motion(i),
                    **common,
                )
            )

        self.mid_block = UNetMidBlock3DCrossAttn(
            ch[-1],
            temb_dim,
            output_scale_factor=config.mid_block_scale_factor,
            motion=config.use_motion_module and config.motion_module_mid_block,
            **common,
        )
        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, ch[0], eps=config.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = InflatedConv3d(ch[0], config.out_channels, kernel_size=3, padding=1)

    # ------------------------------------------------------------------ inputs
    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def _timesteps(self, timestep: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
        """int / 0-d / 1-element / [B] tensor -> [B] int64."""
        t = torch.as_tensor(timestep, device=device)
        if t.numel() == 1:
            return t.reshape(1).expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"timestep must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
        return t

    def _audio(self, encoder_hidden_states: torch.Tensor | None, batch: int, frames: int) -> torch.Tensor | None:
        """[B*f, S, D] or [B, f, S, D] -> [B*f, S, D] (batch-major, frame-minor) in the model dtype."""
        if encoder_hidden_states is None:
            return None
        ehs = encoder_hidden_states
        if ehs.dim() == 4:
            if ehs.shape[:2] != (batch, frames):
                raise ValueError(f"audio of shape {tuple(ehs.shape)} does not match batch {batch} x frames {frames}")
            ehs = ehs.reshape(batch * frames, ehs.shape[2], ehs.shape[3])  # [B,f,S,D] -> [B*f,S,D]
        if ehs.dim() != 3 or ehs.shape[0] != batch * frames:
            raise ValueError(
                f"audio must be [B*f, S, D] = [{batch * frames}, S, D] or [B, f, S, D]; got {tuple(encoder_hidden_states.shape)}"
            )
        if ehs.shape[-1] != self.config.cross_attention_dim:
            raise ValueError(f"audio width {ehs.shape[-1]} != cross_attention_dim {self.config.cross_attention_dim}")
        return ehs.to(self.dtype)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        sample: torch.Tensor,
        timestep: int | torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        deepcache: DeepCacheState | None = None,
        step_index: int | None = None,
    ) -> UNetOutput:
        """Predict the noise.

        Args:
            sample: [B, in_channels, f, h, w].
            timestep: python int or 0-d / 1-element tensor (broadcast to the batch) or [B].
            encoder_hidden_states: audio [B*f, 50, D] (batch-major, frame-minor) or [B, f, 50, D]; None skips the
                cross-attention entirely.
            deepcache: optional :class:`DeepCacheState` (one per block of frames).
            step_index: position of ``timestep`` in the schedule (restarts at 0 per block); defaults to the
                state's own counter.
        Returns:
            :class:`UNetOutput` with ``sample`` [B, out_channels, f, h, w] in ``sample``'s dtype.
        """
        if sample.dim() != 5 or sample.shape[1] != self.config.in_channels:
            raise ValueError(f"sample must be [B, {self.config.in_channels}, f, h, w], got {tuple(sample.shape)}")
        b, _, f, h, w = sample.shape
        input_dtype = sample.dtype
        x = sample.to(self.dtype)

        # 1. time: sinusoid in float32, then cast to the model dtype (SPEC 10.3)
        t = self._timesteps(timestep, b, sample.device)
        t_emb = timestep_sinusoid(t, self.config.block_out_channels[0], self.config.flip_sin_to_cos, self.config.freq_shift)
        temb = self.time_embedding(t_emb.to(self.dtype))  # [B, 4*C0]
        audio = self._audio(encoder_hidden_states, b, f)

        # 2. conv_in (always fresh)
        x = self.conv_in(x)  # [B,13,f,h,w] -> [B,C0,f,h,w]

        # 3. body: full pass, or DeepCache's cheap pass
        if deepcache is None:
            x = self._body(x, temb, audio, stash=None)
        else:
            j = deepcache.next_step if step_index is None else int(step_index)
            deepcache.next_step = j + 1
            if deepcache.is_full_step(j):
                stash: dict[str, torch.Tensor] = {}
                x = self._body(x, temb, audio, stash=stash)
                deepcache.hidden = stash["before_last_layer"]
                deepcache.full_steps += 1
            else:
                x = self._cached_body(x, temb, audio, deepcache, j)
                deepcache.cached_steps += 1

        # 4. output head
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))  # GroupNorm pooled over frames
        return UNetOutput(sample=x.to(input_dtype).contiguous())

    def _body(
        self,
        x: torch.Tensor,
        temb: torch.Tensor,
        audio: torch.Tensor | None,
        stash: dict[str, torch.Tensor] | None,
    ) -> torch.Tensor:
        """conv_in output [B,C0,f,h,w] -> hidden before the output norm [B,C0,f,h,w]."""
        skips: tuple[torch.Tensor, ...] = (x,)
        for block in self.down_blocks:
            x, res = block(x, temb, audio)
            skips += res
        x = self.mid_block(x, temb, audio)

        # latent sides not divisible by 2**num_upsamplers: upsamplers resize to the skip's size
        factor = 2 ** (len(self.up_blocks) - 1)
        forward_upsample_size = any(s % factor != 0 for s in x.shape[-2:]) or any(
            s % factor != 0 for s in skips[0].shape[-2:]
        )
        last = len(self.up_blocks) - 1
        for i, block in enumerate(self.up_blocks):
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            upsample_size = tuple(skips[-1].shape[-2:]) if (i < last and forward_upsample_size) else None
            x = block(x, res, temb, audio, upsample_size=upsample_size, stash=stash if i == last else None)
        return x

    def _cached_body(
        self, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor | None, state: DeepCacheState, step: int
    ) -> torch.Tensor:
        """DeepCache cheap pass: cat(cached hidden, fresh conv_in) -> last layer of the last up block."""
        cached = state.hidden
        if cached is None:
            raise ValueError(
                f"DeepCache step {step} reuses the cache but no full step was run since reset(); "
                f"the first step of each block must have step_index % {state.cache_interval} == 0"
            )
        if cached.shape[0] != x.shape[0] or cached.shape[2:] != x.shape[2:] or cached.dtype != x.dtype:
            raise ValueError(
                f"DeepCache state holds {tuple(cached.shape)} {cached.dtype} but this step's conv_in output is "
                f"{tuple(x.shape)} {x.dtype}; use one DeepCacheState per block and reset() it between blocks"
            )
        block = self.up_blocks[-1]
        layer = len(block.resnets) - 1
        h = torch.cat([cached, x], dim=1)  # [B,C,f,h,w] + [B,C0,f,h,w] -> [B,C+C0,f,h,w]
        return block.forward_layer(layer, h, temb, audio)

    # ------------------------------------------------------------------ weights
    @classmethod
    def from_official_checkpoint(
        cls,
        path: str | Path,
        config: UNet3DConfig | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> "UNet3DConditionModel":
        """Build on the meta device and strictly load ``latentsync_unet.pt`` (or a ``.safetensors`` file)."""
        state_dict = read_official_unet_checkpoint(path)
        return cls._from_state_dict(state_dict, config or UNet3DConfig(), dtype, device, source=str(path))

    @classmethod
    def _from_state_dict(
        cls,
        state_dict: dict[str, torch.Tensor],
        config: UNet3DConfig,
        dtype: torch.dtype | None,
        device: torch.device | str | None,
        source: str,
    ) -> "UNet3DConditionModel":
        with torch.device("meta"):
            model = cls(config)
        model.to(dtype or torch.float32)
        load_unet_state_dict(model, state_dict, source=source, device=device)  # cast + move per tensor, once
        return model.eval()

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors``."""
        return save_model(self, self.config.to_dict(), directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> "UNet3DConditionModel":
        """Inverse of :meth:`save_pretrained`."""
        config_dict, state_dict = read_pretrained(directory)
        config = UNet3DConfig.from_dict(config_dict)
        return cls._from_state_dict(state_dict, config, dtype, device, source=str(Path(directory) / "model.safetensors"))
