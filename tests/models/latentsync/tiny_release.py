"""Tiny random-weight LatentSync releases in the official file formats, laid out as a Hugging Face hub cache.

Same architectures as the released models (reduced widths): `UNet3DConfig.tiny()` (cross_attention_dim 64),
an openai-whisper checkpoint dict with d=64 / 4 heads / 4 layers / n_audio_ctx 1500, a diffusers AutoencoderKL
with block_out_channels (16, 16, 32, 32). Files go where ``hf_hub_download`` puts them:
``models--{org}--{name}/blobs/<sha256 for LFS files, git sha1 otherwise>``, ``snapshots/<commit>/<file>`` symlinks
to the blobs, ``refs/main`` holding the commit.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

LS_COMMIT = "0123456789abcdef0123456789abcdef01234567"
VAE_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
WHISPER_DIMS = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 4, "n_audio_layer": 4,
                "n_vocab": 64, "n_text_ctx": 8, "n_text_state": 64, "n_text_head": 4, "n_text_layer": 1}
VAE_KWARGS = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 16, 32, 32), layers_per_block=1, act_fn="silu", latent_channels=4, norm_num_groups=8,
    sample_size=64,
)
LFS_SUFFIXES = (".pt", ".safetensors", ".png", ".bin")


def repo_dir(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def put_hub_file(cache: Path, repo_id: str, filename: str, data: bytes, commit: str) -> Path:
    """Write ``data`` as ``repo_id/filename`` at ``commit`` in the hub cache layout; returns the snapshot path."""
    rdir = repo_dir(cache, repo_id)
    if filename.endswith(LFS_SUFFIXES):
        blob_name = hashlib.sha256(data).hexdigest()
    else:  # regular git file: the blob is named by its git object id
        blob_name = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    blob = rdir / "blobs" / blob_name
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    (rdir / "refs").mkdir(parents=True, exist_ok=True)
    (rdir / "refs" / "main").write_text(commit)
    link = rdir / "snapshots" / commit / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(os.path.relpath(blob, link.parent), link)
    return link


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def tiny_unet(seed: int = 0):
    from lipline.models.latentsync.config import UNet3DConfig
    from lipline.models.latentsync.unet import UNet3DConditionModel

    torch.manual_seed(seed)
    return UNet3DConditionModel(UNet3DConfig.tiny()).eval()


def tiny_whisper_checkpoint(seed: int = 0) -> dict:
    from lipline.models.latentsync.weights import expected_whisper_encoder_shapes

    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in expected_whisper_encoder_shapes(WHISPER_DIMS).items():
        if k.endswith(("ln.weight", "ln_post.weight")):
            sd[k] = torch.ones(shape)
        else:
            sd[k] = torch.randn(shape, generator=g) * 0.02
    d = WHISPER_DIMS["n_text_state"]
    sd["decoder.ln.weight"] = torch.ones(d)  # the real file has a decoder too; LatentSync ignores it
    sd["decoder.ln.bias"] = torch.zeros(d)
    return {"dims": dict(WHISPER_DIMS), "model_state_dict": sd}


def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**VAE_KWARGS).eval()


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
        put_hub_file(cache, repo, "latentsync_unet.pt", _torch_bytes({"state_dict": unet_sd, "global_step": 1}), LS_COMMIT)
    if "whisper" not in drop:
        put_hub_file(cache, repo, "whisper/tiny.pt", _torch_bytes(tiny_whisper_checkpoint()), LS_COMMIT)
    vae_tmp = cache.parent / f"_vae_src_{version}"
    tiny_vae().save_pretrained(str(vae_tmp), safe_serialization=True)
    for role, name in (("vae_config", "config.json"), ("vae_weights", "diffusion_pytorch_model.safetensors")):
        if role not in drop:
            put_hub_file(cache, VAE_REPO, name, (vae_tmp / name).read_bytes(), VAE_COMMIT)
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
