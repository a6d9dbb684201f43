"""Tiny random-weight LatentSync releases in the official file formats, laid out as a Hugging Face hub cache.

Same architectures as the released models (reduced widths): `UNet3DConfig.tiny()` (cross_attention_dim 64),
an openai-whisper checkpoint dict with d=64 / 4 heads / 4 layers / n_audio_ctx 1500, a diffusers AutoencoderKL
with block_out_channels (16, 16, 32, 32). Files go where ``hf_hub_download`` puts them:
``models--{org}--{name}/blobs/<sha256 for LFS files, git sha1 otherwise>``, ``snapshots/<commit>/<file>`` symlinks
to the blobs, ``refs/main`` holding the commit.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lipline.models.latentsync.smoke import (  # noqa: F401 - re-exported for the tests
    LS_COMMIT, VAE_COMMIT, VAE_KWARGS, WHISPER_DIMS, put_hub_file, put_vae, repo_dir, tiny_unet, tiny_vae,
    tiny_whisper_checkpoint, torch_bytes,
)


def mask_png_bytes(size: int = 256) -> bytes:
    """Synthetic official-style mask: 3 identical channels, 255 = keep (top), 0 = regenerate (lower half)."""
    from PIL import Image

    arr = np.full((size, size, 3), 255, dtype=np.uint8)
    arr[size // 2:, size // 8: size - size // 8] = 0
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def tiny_mask_tensor(resolution: int) -> torch.Tensor:
    m = torch.ones(3, resolution, resolution, dtype=torch.float64)
    m[:, resolution // 2:, resolution // 8: resolution - resolution // 8] = 0
    return m


@dataclass
class TinyRelease:
    cache: Path
    version: str
    unet_sd: dict
    mask_file: Path  # a mask.png outside the cache


def write_tiny_release(cache: Path, version: str = "1.5", *, with_mask_in_snapshot: bool = False,
                       unet_sd: dict | None = None, drop: tuple[str, ...] = ()) -> TinyRelease:
    """Write the tiny release of ``version`` into hub cache ``cache``; ``drop`` omits roles (unet, whisper, vae_config, vae_weights)."""
    from lipline.models.latentsync.weights import VAE_REPO, version_spec

    repo = version_spec(version).repo_id
    cache.mkdir(parents=True, exist_ok=True)
    if unet_sd is None:
        unet_sd = {k: v.clone() for k, v in tiny_unet().state_dict().items()}
    if "unet" not in drop:
        put_hub_file(cache, repo, "latentsync_unet.pt", torch_bytes({"state_dict": unet_sd, "global_step": 1}), LS_COMMIT)
    if "whisper" not in drop:
        put_hub_file(cache, repo, "whisper/tiny.pt", torch_bytes(tiny_whisper_checkpoint()), LS_COMMIT)
    if "vae_config" not in drop or "vae_weights" not in drop:
        put_vae(cache)
        for role, name in (("vae_config", "config.json"), ("vae_weights", "diffusion_pytorch_model.safetensors")):
            if role in drop:
                link = repo_dir(cache, VAE_REPO) / "snapshots" / VAE_COMMIT / name
                (link.parent / os.readlink(link)).resolve().unlink()
                link.unlink()
    if with_mask_in_snapshot:
        put_hub_file(cache, repo, "mask.png", mask_png_bytes(), LS_COMMIT)
    mask_file = cache.parent / "mask.png"
    mask_file.write_bytes(mask_png_bytes())
    return TinyRelease(cache=cache, version=version, unet_sd=unet_sd, mask_file=mask_file)


def random_faces(n: int, resolution: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, resolution, resolution), generator=g, dtype=torch.uint8)


def random_audio(n: int, d: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 50, d, generator=g)
