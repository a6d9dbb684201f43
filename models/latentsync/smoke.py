"""A smoke model: a random-weight LatentSync of the reduced ("tiny") configuration in the official file layout.

`write_smoke_release` lays out, in a Hugging Face hub cache folder, exactly what `lipline weights pull` fetches
(``latentsync_unet.pt`` with a ``state_dict``, ``whisper/tiny.pt`` in openai-whisper's ``{"dims",
"model_state_dict"}`` format, the diffusers VAE ``config.json`` + ``diffusion_pytorch_model.safetensors``) plus
``mask.png`` and a marker, ``lipline-smoke.json``, holding the reduced UNet config. The real loading code reads it
(`LatentSyncModel.from_pretrained`), and a job run on it goes through the whole face path on a CPU in seconds.
Its frames are **not a real lip-sync**: every output made with it is labelled so (CLI, manifest).

Reduced architecture (same code as the released models): UNet channels (32, 32, 32, 64) with audio width 64,
whisper d=64 / 4 heads / 4 layers / 1500 audio positions, VAE channels (16, 16, 32, 32) with latent stride 8.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

LS_COMMIT = "0123456789abcdef0123456789abcdef01234567"
VAE_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
SMOKE_MARKER = "lipline-smoke.json"
SMOKE_NOTE = "smoke model: not a real lip-sync (random weights, for pipeline QA)"
WHISPER_DIMS = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 4, "n_audio_layer": 4,
                "n_vocab": 64, "n_text_ctx": 8, "n_text_state": 64, "n_text_head": 4, "n_text_layer": 1}
VAE_KWARGS: dict[str, Any] = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 16, 32, 32), layers_per_block=1, act_fn="silu", latent_channels=4, norm_num_groups=8,
    sample_size=64,
)
LFS_SUFFIXES = (".pt", ".safetensors", ".png", ".bin")


def repo_dir(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def put_hub_file(cache: Path, repo_id: str, filename: str, data: bytes, commit: str) -> Path:
    """Write ``data`` as ``repo_id/filename`` at ``commit`` in the hub cache layout; returns the snapshot path.

    Blobs are named like ``hf_hub_download`` names them: the SHA-256 for LFS files, the git blob id otherwise;
    ``snapshots/<commit>/<file>`` links to the blob and ``refs/main`` holds the commit.
    """
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


def torch_bytes(obj: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def tiny_unet(seed: int = 0):
    import torch

    from .config import UNet3DConfig
    from .unet import UNet3DConditionModel

    torch.manual_seed(seed)
    return UNet3DConditionModel(UNet3DConfig.tiny()).eval()


def tiny_whisper_checkpoint(seed: int = 0) -> dict:
    """An openai-whisper checkpoint dict (``dims`` + ``model_state_dict``) of the reduced encoder."""
    import torch

    from .weights import expected_whisper_encoder_shapes

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
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**VAE_KWARGS).eval()


def put_vae(cache: Path, vae: Any = None) -> None:
    """The diffusers VAE files of ``vae`` (default: the reduced one) under the VAE repo of the hub cache."""
    from .weights import VAE_FILES, VAE_REPO

    with tempfile.TemporaryDirectory(prefix="lipline-vae-") as tmp:
        (vae if vae is not None else tiny_vae()).save_pretrained(tmp, safe_serialization=True)
        for name in VAE_FILES:
            put_hub_file(cache, VAE_REPO, name, (Path(tmp) / name).read_bytes(), VAE_COMMIT)


def write_smoke_release(cache_dir: str | os.PathLike, version: str = "1.5", *, seed: int = 0) -> Path:
    """Write the smoke model of ``version`` ("1.5" or "1.6") into hub cache ``cache_dir``; returns the snapshot
    folder of the LatentSync repo. Existing real weights of the other repos in that cache are left alone."""
    import cv2

    from lipline.models.face.mask import official_mask

    from .weights import MASK_FILE, UNET_FILE, WHISPER_FILE, version_spec

    cache = Path(cache_dir).expanduser().absolute()
    cache.mkdir(parents=True, exist_ok=True)
    repo = version_spec(version).repo_id
    unet = tiny_unet(seed)
    sd = {k: v.clone() for k, v in unet.state_dict().items()}
    put_hub_file(cache, repo, UNET_FILE, torch_bytes({"state_dict": sd, "global_step": 0}), LS_COMMIT)
    put_hub_file(cache, repo, WHISPER_FILE, torch_bytes(tiny_whisper_checkpoint(seed)), LS_COMMIT)
    put_vae(cache)
    ok, png = cv2.imencode(".png", official_mask(256))
    put_hub_file(cache, repo, MASK_FILE, png.tobytes(), LS_COMMIT)
    marker = {"smoke_model": True, "note": SMOKE_NOTE, "version": version, "unet_config": unet.config.to_dict()}
    put_hub_file(cache, repo, SMOKE_MARKER, json.dumps(marker, indent=2).encode(), LS_COMMIT)
    return repo_dir(cache, repo) / "snapshots" / LS_COMMIT


def smoke_marker(unet_path: str | os.PathLike) -> dict | None:
    """The smoke marker beside a resolved ``latentsync_unet.pt`` (None for real weights)."""
    path = Path(unet_path).parent / SMOKE_MARKER
    if not path.is_file():
        return None
    return json.loads(path.read_text())


__all__ = ["SMOKE_NOTE", "put_hub_file", "put_vae", "repo_dir", "smoke_marker", "tiny_unet", "tiny_vae",
           "tiny_whisper_checkpoint", "write_smoke_release"]
