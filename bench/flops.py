"""Model FLOPs of LatentSync and the model FLOPs utilisation (MFU) of a timed run.

FLOPs are *counted*, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` over one forward of the UNet
(and of the VAE encoder / decoder) built on the **meta device** (shapes only, no memory, no GPU), so the count of
the full-size architecture is the same on a laptop and on an H100. A multiply-add counts 2 FLOPs; SDPA attention
and convolutions are counted, element-wise ops are not (they are bandwidth-bound and tiny in FLOPs).

MFU = FLOPs of the run (from the counts and the run's schedule) / seconds / the device's dense fp16/bf16 peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Dense (no 2:4 sparsity) fp16/bf16 tensor-core peak in TFLOP/s, matched on the CUDA device name, first match wins.
# Sources: the vendor data sheets, whose headline figures are "with sparsity" (twice the dense figure):
#   H100 SXM, H200 SXM, GH200: 989.4 (H100 / H200 data sheets: "BF16 Tensor Core 1,979 TFLOPS*", * = with sparsity)
#   H100 PCIe: 756 (H100 data sheet, PCIe column: 1,513*)
#   A100 SXM and PCIe: 312 (A100 data sheet: "BF16 Tensor Core 312 TFLOPS | 624 TFLOPS*")
#   L40S: 362.05 (L40S data sheet: 733*); L40: 181.05 (L40 data sheet: 362*); L4: 121 (L4 data sheet: 242*)
#   A10: 125 (A10 data sheet: 250*); A10G (AWS's variant): no vendor figure found -> unknown (MFU n/a)
#   RTX 4090: 165.2 (Ada Lovelace architecture whitepaper, FP16 tensor with FP32 accumulate; 330.3 with FP16 accumulate)
#   RTX 3090: 71 (Ampere GA102 whitepaper, FP16 tensor with FP32 accumulate)
# Names torch reports: "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H100 PCIe", "NVIDIA H200", "NVIDIA A100-SXM4-80GB", ...
PEAK_TFLOPS: list[tuple[str, float | None]] = [
    ("H200", 989.4), ("GH200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0), ("L40S", 362.05),
    ("L40", 181.05), ("L4", 121.0), ("RTX 4090", 165.2), ("A10G", None), ("A10", 125.0), ("RTX 3090", 71.0),
]


def peak_tflops(device_name: str) -> float | None:
    """Dense fp16/bf16 peak of ``device_name`` (e.g. ``torch.cuda.get_device_name()``), None when unknown."""
    for key, value in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


@dataclass(frozen=True)
class ModelFlops:
    """Counted FLOPs of one 16-frame window's parts (``frames`` frames, CFG batch ``cfg_batch``).

    Attributes:
        unet_full: one full UNet step (all blocks).
        unet_cached: one DeepCache step (only the shallow blocks; equals ``unet_full`` when DeepCache is off).
        vae_encode: encoder over ``frames`` frames (run twice per window: masked and reference images).
        vae_decode: decoder over ``frames`` frames.
    """

    frames: int
    cfg_batch: int
    unet_full: int
    unet_cached: int
    vae_encode: int
    vae_decode: int

    def window(self, steps: int, deepcache: bool, cache_interval: int = 3) -> int:
        """FLOPs of one window: 2 encodes, ``steps`` UNet steps (every ``cache_interval``-th full with DeepCache), 1 decode."""
        full = math.ceil(steps / cache_interval) if deepcache else steps
        return 2 * self.vae_encode + full * self.unet_full + (steps - full) * self.unet_cached + self.vae_decode

    def run(self, frames: int, steps: int, deepcache: bool) -> float:
        """FLOPs of generating ``frames`` frames (linear in frames: the temporal attention over 16 frames is < 0.1 %)."""
        return self.window(steps, deepcache) * frames / self.frames


@torch.no_grad()
def count_flops(unet_config, vae_kwargs: dict, resolutions: list[int], *, frames: int = 16, guidance: float = 1.5,
                dtype: torch.dtype = torch.float16) -> dict[int, ModelFlops]:
    """Count the FLOPs of the UNet (full and DeepCache-cached step), VAE encoder and decoder on the meta device.

    Args:
        unet_config: `UNet3DConfig` (``UNet3DConfig()`` = the official 1.27 B-parameter architecture).
        vae_kwargs: `diffusers.AutoencoderKL` layout arguments (see ``engine_throughput.FULL_VAE``).
        resolutions: face sides in pixels (latents are ``resolution / 8``); one `ModelFlops` each.
        frames: frames per window (16).
        guidance: CFG scale; ``> 1`` doubles the UNet batch.
    """
    from diffusers import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    from lipline.models.latentsync.unet import DeepCacheState, UNet3DConditionModel

    def counted(fn) -> int:
        with FlopCounterMode(display=False) as fc:
            fn()
        return int(fc.get_total_flops())

    b = 2 if guidance > 1.0 else 1
    out: dict[int, ModelFlops] = {}
    with torch.device("meta"):
        unet = UNet3DConditionModel(unet_config).to(dtype).eval()
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, act_fn="silu", latent_channels=4,
                            **vae_kwargs).to(dtype).eval()
        t = torch.tensor(501)
        for resolution in resolutions:
            h = resolution // 8
            x = torch.empty(b, unet_config.in_channels, frames, h, h, dtype=dtype)  # [B', 13, f, h, w]
            audio = torch.empty(b * frames, 50, unet_config.cross_attention_dim, dtype=dtype)  # [B' * f, 50, D]
            pixels = torch.empty(frames, 3, resolution, resolution, dtype=dtype)  # [f, 3, R, R]
            latents = torch.empty(frames, 4, h, h, dtype=dtype)  # [f, 4, h, w]
            full = counted(lambda: unet(x, t, encoder_hidden_states=audio))
            state = DeepCacheState(cache_interval=3)
            unet(x, t, encoder_hidden_states=audio, deepcache=state, step_index=0)  # fills the cache
            cached = counted(lambda: unet(x, t, encoder_hidden_states=audio, deepcache=state, step_index=1))
            out[resolution] = ModelFlops(frames=frames, cfg_batch=b, unet_full=full, unet_cached=cached,
                                         vae_encode=counted(lambda: vae.encode(pixels)),
                                         vae_decode=counted(lambda: vae.decode(latents)))
    return out


def mfu(flops: float, seconds: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation in [0, 1]: ``flops / seconds / (peak TFLOP/s * 1e12)``; None without a known peak."""
    if peak is None or seconds <= 0:
        return None
    return flops / seconds / (peak * 1e12)


__all__ = ["ModelFlops", "PEAK_TFLOPS", "count_flops", "mfu", "peak_tflops"]
