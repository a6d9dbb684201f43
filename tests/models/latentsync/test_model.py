"""LatentSyncModel: loading a (tiny) release through the official-format loaders; assembling from components."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from lipline.errors import EngineError
from lipline.models.latentsync import weights
from lipline.models.latentsync.config import UNet3DConfig
from lipline.models.latentsync.model import LatentSyncModel

from .tiny_release import tiny_mask_tensor, tiny_unet, tiny_vae, write_tiny_release


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_tiny_release(tmp_path_factory.mktemp("ls16") / "hub", "1.6")


def test_from_pretrained_via_hf_home(release, monkeypatch):
    from diffusers import AutoencoderKL, DDIMScheduler

    from lipline.models.latentsync.audio import AudioEncoder
    from lipline.models.latentsync.unet import UNet3DConditionModel

    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(release.cache.parent))
    monkeypatch.setenv(weights.MASK_ENV, str(release.mask_file))
    model = LatentSyncModel.from_pretrained("1.6", unet_config=UNet3DConfig.tiny())
    assert isinstance(model.unet, UNet3DConditionModel) and isinstance(model.vae, AutoencoderKL)
    assert isinstance(model.audio_encoder, AudioEncoder) and isinstance(model.scheduler, DDIMScheduler)
    assert model.version == "1.6" and model.resolution == 512
    assert model.mask.dtype == torch.float64 and tuple(model.mask.shape) == (3, 512, 512)
    assert model.mask.min() >= 0 and model.mask.max() <= 1 and (model.mask == 0).any()
    # weights really come from the checkpoint
    for k, v in model.unet.state_dict().items():
        torch.testing.assert_close(v, release.unet_sd[k].to(v.dtype))
    prov = model.provenance
    assert prov["version"] == "1.6" and prov["repos"]["ByteDance/LatentSync-1.6"]
    for role, path in prov["files"].items():
        assert prov["sha256"][role] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert model.pipeline().unet is model.unet


def test_from_pretrained_dtype(release):
    model = LatentSyncModel.from_pretrained("1.6", release.cache, dtype=torch.bfloat16, mask_path=release.mask_file,
                                           unet_config=UNet3DConfig.tiny(), hash_files=False)
    assert model.dtype == torch.bfloat16 and next(model.vae.parameters()).dtype == torch.bfloat16
    assert next(model.audio_encoder.parameters()).dtype == torch.float32  # whisper stays fp32
    assert "sha256" not in model.provenance


def test_strict_unet_loading_names_a_removed_key(tmp_path):
    sd = {k: v.clone() for k, v in tiny_unet().state_dict().items()}
    removed = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    assert removed in sd
    del sd[removed]
    rel = write_tiny_release(tmp_path / "hub", "1.5", unet_sd=sd)
    with pytest.raises(EngineError, match=r"1 missing \(e\.g\. " + removed.replace(".", r"\.")):
        LatentSyncModel.from_pretrained("1.5", rel.cache, mask_path=rel.mask_file, unet_config=UNet3DConfig.tiny())


def test_missing_mask_falls_back_to_the_generated_one(release):
    from lipline.models.latentsync.mask import load_mask

    model = LatentSyncModel.from_pretrained("1.6", release.cache, unet_config=UNet3DConfig.tiny(), hash_files=False)
    assert model.provenance["mask"] == {"source": "generated", "generator": "lipline.models.face.mask.official_mask"}
    assert torch.equal(model.mask, load_mask(None, 512))
    assert not torch.equal(model.mask, load_mask(release.mask_file, 512))  # the tiny release's mask differs
    msg = weights.mask_help("1.6")  # what `lipline weights pull` prints when no mask file is found
    assert weights.MASK_ENV in msg and "mask_path" in msg and "ByteDance/LatentSync-1.6" in msg


def test_mask_file_is_recorded_with_its_hash(release, monkeypatch):
    monkeypatch.setenv(weights.MASK_ENV, str(release.mask_file))
    model = LatentSyncModel.from_pretrained("1.6", release.cache, unet_config=UNet3DConfig.tiny(), hash_files=False)
    assert model.provenance["mask"] == {"source": "file", "path": str(release.mask_file),
                                        "sha256": hashlib.sha256(release.mask_file.read_bytes()).hexdigest()}


def test_missing_weights_raise_weights_not_found(tmp_path):
    with pytest.raises(weights.WeightsNotFound, match="lipline weights pull --version 1.5"):
        LatentSyncModel.from_pretrained("1.5", tmp_path)


def test_from_components_and_checks():
    from lipline.models.latentsync.audio import AudioEncoder
    from lipline.models.latentsync.pipeline import LatentSyncPipeline

    unet, vae = tiny_unet(), tiny_vae()
    model = LatentSyncModel.from_components(unet, vae, AudioEncoder(n_audio_state=64, n_audio_head=4), resolution=64)
    assert isinstance(model.pipeline(), LatentSyncPipeline)
    assert tuple(model.mask.shape) == (3, 64, 64) and model.mask.dtype == torch.float64
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    with pytest.raises(EngineError, match="does not match the UNet cross_attention_dim 64"):
        LatentSyncModel.from_components(unet, vae, AudioEncoder(n_audio_state=384, n_audio_head=6), resolution=64)
    with pytest.raises(EngineError, match="mask shape"):
        LatentSyncModel.from_components(unet, vae, mask=tiny_mask_tensor(32), resolution=64)
    assert LatentSyncModel.from_components(unet, vae, version="1.5").resolution == 256


def test_audio_chunks_from_a_waveform(release):
    model = LatentSyncModel.from_pretrained("1.6", release.cache, mask_path=release.mask_file,
                                           unet_config=UNet3DConfig.tiny(), hash_files=False)
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1  # 1 s
    chunks = model.audio_chunks(wave)
    assert chunks.shape == (27, 50, 64)  # floor(50 / 2) + 2 frames at 25 fps
