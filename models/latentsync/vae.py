"""VAE wrapper: `diffusers.AutoencoderKL` (``stabilityai/sd-vae-ft-mse`` layout) with LatentSync's fixed scaling.

The official script forces ``scaling_factor = 0.18215`` and ``shift_factor = 0`` whatever the VAE config says.
Latents are posterior **samples** (mean + std * randn), not the mean (SPEC 6.2).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from lipline.errors import EngineError

VAE_SCALING_FACTOR = 0.18215
VAE_SHIFT_FACTOR = 0.0


def load_vae(path_or_dir: str | os.PathLike, dtype: torch.dtype | None = None) -> AutoencoderKL:
    """Load an AutoencoderKL from a diffusers folder (``config.json`` + ``diffusion_pytorch_model.*``).

    Returns the model in eval mode, on CPU, in ``dtype`` (float32 if None).
    """
    path = Path(path_or_dir)
    if path.is_file():
        path = path.parent
    if not (path / "config.json").is_file():
        raise EngineError(f"{path}: no VAE config.json (expected a diffusers AutoencoderKL folder)")
    try:
        vae = AutoencoderKL.from_pretrained(str(path), torch_dtype=dtype or torch.float32, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise EngineError(f"{path}: cannot load the VAE: {exc}") from exc
    return vae.eval()


@torch.no_grad()
def encode_sample(vae: AutoencoderKL, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Encode frames and draw one posterior sample, scaled.

    Args:
        pixels: ``[f, 3, R, R]`` in [-1, 1] (cast to the VAE's dtype/device).
        generator: RNG for the ``randn(f, 4, R/8, R/8)`` draw (global generator if None).

    Returns:
        ``[f, 4, R/8, R/8]`` = (sample - shift) * 0.18215.
    """
    param = next(vae.parameters())
    posterior = vae.encode(pixels.to(device=param.device, dtype=param.dtype)).latent_dist
    z = posterior.sample(generator=generator)
    return (z - VAE_SHIFT_FACTOR) * VAE_SCALING_FACTOR


@torch.no_grad()
def decode(vae: AutoencoderKL, latents: torch.Tensor, slicing: bool = False) -> torch.Tensor:
    """Decode scaled latents ``[f, 4, h, w]`` -> pixels ``[f, 3, 8h, 8w]`` in about [-1, 1] (not clamped).

    ``slicing=True`` decodes one frame at a time (less memory; the official decodes all f at once).
    """
    param = next(vae.parameters())
    z = latents.to(device=param.device, dtype=param.dtype) / VAE_SCALING_FACTOR + VAE_SHIFT_FACTOR
    if slicing and z.shape[0] > 1:
        return torch.cat([vae.decode(z[i : i + 1]).sample for i in range(z.shape[0])], dim=0)
    return vae.decode(z).sample


__all__ = ["VAE_SCALING_FACTOR", "VAE_SHIFT_FACTOR", "decode", "encode_sample", "load_vae"]
