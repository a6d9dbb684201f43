"""LatentSync sampling loop on tiny random models (no shared files needed): windows, batching, CFG, progress."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL

from lipline.models.latentsync.config import UNet3DConfig
from lipline.models.latentsync.pipeline import LatentSyncOutput, LatentSyncPipeline, denoise_block, faces_to_pixels, pixels_to_uint8
from lipline.models.latentsync.scheduler import make_ddim_scheduler
from lipline.models.latentsync.unet import DeepCacheState, UNet3DConditionModel
from lipline.models.latentsync.vae import VAE_SCALING_FACTOR, decode, encode_sample

R = 64  # face side -> 8x8 latents
AUDIO_D = 64  # UNet3DConfig.tiny() cross_attention_dim
STEPS = 2


class CountingUNet(torch.nn.Module):
    """Wraps the UNet and records the batch size of every call."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.batches: list[int] = []
        self.frames: list[int] = []

    def forward(self, sample, timestep, encoder_hidden_states=None, deepcache=None, step_index=None):
        self.batches.append(sample.shape[0])
        self.frames.append(sample.shape[2])
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, deepcache=deepcache, step_index=step_index)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    unet = UNet3DConditionModel(UNet3DConfig.tiny()).eval()
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "temporal_transformer.proj_out" in name:  # zero-initialised in the config; make it matter
                p.normal_(0, 0.05)
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
    ).eval()
    return unet, vae


def _inputs(n: int, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    faces = torch.randint(0, 256, (n, 3, R, R), generator=g, dtype=torch.uint8)
    audio = torch.randn(n, 50, AUDIO_D, generator=g)
    mask = torch.ones(3, R, R, dtype=torch.float64)
    mask[:, R // 2 :, 8:-8] = 0
    return faces, audio, mask


def _pipe(models, counting: bool = False) -> LatentSyncPipeline:
    unet, vae = models
    return LatentSyncPipeline(CountingUNet(unet) if counting else unet, vae, make_ddim_scheduler())


@pytest.mark.parametrize("n", [16, 17, 27, 33])
def test_window_handling_keeps_every_frame(models, n):
    faces, audio, mask = _inputs(n)
    pipe = _pipe(models, counting=True)
    seen: list[tuple[int, int]] = []
    out = pipe.generate(faces, audio, mask, num_inference_steps=STEPS, progress=lambda d, t: seen.append((d, t)), return_latents=True)
    assert isinstance(out, LatentSyncOutput)
    assert out.faces.shape == (n, 3, R, R) and out.faces.dtype == torch.uint8 and out.faces.device.type == "cpu"
    expected = [min(16, n - s) for s in range(0, n, 16)]
    assert [lat.shape[2] for lat in out.final_latents] == expected  # the last (short) window is kept, unpadded
    assert pipe.unet.frames == [f for f in expected for _ in range(STEPS)]
    assert seen[-1] == (n, n) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    # unmasked pixels are the original faces (paste of SPEC 9.2)
    keep = mask[0].bool()
    assert torch.equal(out.faces[:, :, keep], pixels_to_uint8(faces_to_pixels(faces))[:, :, keep])


@pytest.mark.parametrize("deepcache", [True, False])
def test_window_batch_matches_sequential(models, deepcache):
    # float64: batched and single convolutions round differently, and a random tiny UNet on 8x8 latents (2x2 and
    # 1x1 at the deepest levels, GroupNorm over a handful of values) amplifies rounding by ~1e9: float32 gives
    # ~1e-3 after 4 steps, float64 ~1e-7. A batching/ordering bug would give O(1) differences.
    import copy

    unet, vae = (copy.deepcopy(m).double() for m in models)
    faces, audio, mask = _inputs(33)
    pipe = LatentSyncPipeline(CountingUNet(unet), vae, make_ddim_scheduler())
    kwargs = dict(num_inference_steps=4, deepcache=deepcache, return_latents=True, return_float=True, dtype=torch.float64)
    one = pipe.generate(faces, audio, mask, **kwargs)
    pipe.unet.batches.clear()
    two = pipe.generate(faces, audio, mask, window_batch=2, **kwargs)
    assert pipe.unet.batches == [4] * 4 + [2] * 4  # windows (16, 16) together with CFG, then the 1-frame window
    assert len(one.final_latents) == len(two.final_latents) == 3
    for a, b in zip(one.final_latents, two.final_latents):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(one.faces_float, two.faces_float, rtol=0, atol=1e-5)
    assert (one.faces.int() - two.faces.int()).abs().max() <= 1


def test_guidance_one_runs_single_pass(models):
    # 20 frames: windows 16 + 4 (a 1-frame window without CFG would leave one value per GroupNorm group at the
    # 1x1 deepest level of this 64-px toy model, which torch refuses; real resolutions keep >= 4x4 there)
    faces, audio, mask = _inputs(20)
    pipe = _pipe(models, counting=True)
    pipe.generate(faces, audio, mask, num_inference_steps=STEPS, guidance_scale=1.0)
    assert pipe.unet.batches == [1] * (2 * STEPS)
    pipe.unet.batches.clear()
    pipe.generate(faces, audio, mask, num_inference_steps=STEPS, guidance_scale=1.5)
    assert pipe.unet.batches == [2] * (2 * STEPS)


def test_seed_is_deterministic_and_leaves_global_rng_alone(models):
    faces, audio, mask = _inputs(5)
    pipe = _pipe(models)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = pipe.generate(faces, audio, mask, num_inference_steps=STEPS, seed=7, return_latents=True)
    assert torch.equal(torch.get_rng_state(), before)
    b = pipe.generate(faces, audio, mask, num_inference_steps=STEPS, seed=7, return_latents=True)
    c = pipe.generate(faces, audio, mask, num_inference_steps=STEPS, seed=8, return_latents=True)
    assert torch.equal(a.final_latents[0], b.final_latents[0]) and torch.equal(a.faces, b.faces)
    assert not torch.equal(a.final_latents[0], c.final_latents[0])
    assert pipe.generate(faces, audio, mask, num_inference_steps=1, seed=None).seed is not None


def test_denoise_block_deepcache_matches_counts(models):
    unet, _ = models
    scheduler = make_ddim_scheduler()
    scheduler.set_timesteps(7)
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(1, 4, 3, 8, 8, generator=g)
    cond = [torch.rand(1, 1, 3, 8, 8, generator=g), torch.randn(1, 4, 3, 8, 8, generator=g), torch.randn(1, 4, 3, 8, 8, generator=g)]
    state = DeepCacheState(cache_interval=3)
    seen = []
    denoise_block(unet, scheduler, lat, *cond, torch.randn(3, 50, AUDIO_D, generator=g), deepcache=state, step_callback=lambda j, t, x: seen.append(int(t)))
    assert (state.full_steps, state.cached_steps) == (3, 4)  # steps 0, 3, 6 full
    assert seen == [int(t) for t in scheduler.timesteps]


def test_check_inputs(models):
    faces, audio, mask = _inputs(4)
    pipe = _pipe(models)
    with pytest.raises(ValueError, match="uint8"):
        pipe.generate(faces.float(), audio, mask)
    with pytest.raises(ValueError, match="audio_chunks"):
        pipe.generate(faces, audio[:3], mask)
    with pytest.raises(ValueError, match="mask"):
        pipe.generate(faces, audio, mask[:, :32, :32])
    with pytest.raises(ValueError, match="window"):
        pipe.generate(faces, audio, mask, window=25)


def test_vae_helpers_scale_and_slicing(models):
    _, vae = models
    pixels = torch.rand(3, 3, R, R) * 2 - 1
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    z = encode_sample(vae, pixels, generator=g1)
    posterior = vae.encode(pixels).latent_dist
    torch.testing.assert_close(z, posterior.sample(generator=g2) * VAE_SCALING_FACTOR)
    assert not torch.allclose(z, posterior.mean * VAE_SCALING_FACTOR)  # a sample, not the mean
    torch.testing.assert_close(decode(vae, z, slicing=True), decode(vae, z), rtol=0, atol=1e-5)
