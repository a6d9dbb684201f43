"""Samplers of the denoising loop: the official DDIM and the optional DPM-Solver++, driven by an oracle "UNet".

The oracle knows the clean latents ``x0`` and returns the exact noise of its input,
``eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)``: with an exact noise prediction DDIM (eta 0) lands on
``sqrt(a_final) x0 + sqrt(1 - a_final) eps_T`` and DPM-Solver++ (which ends at sigma 0) on ``x0`` itself. That checks
the scheduler configuration and the loop's timestep plumbing (the UNet must see the step's own timestep) without a
network. Tiny random networks check the rest (multistep history reset per block, window batching, the engine option).
"""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import AutoencoderKL

from lipline.errors import EngineError
from lipline.models.latentsync.config import UNet3DConfig
from lipline.models.latentsync.engine import EngineParams, LatentSyncEngine
from lipline.models.latentsync.model import LatentSyncModel
from lipline.models.latentsync.pipeline import LatentSyncPipeline, denoise_block
from lipline.models.latentsync.scheduler import DEFAULT_STEPS, SCHEDULERS, make_scheduler
from lipline.models.latentsync.unet import UNet3DConditionModel, UNetOutput

R = 64
AUDIO_D = 64


class OracleUNet(torch.nn.Module):
    """Predicts the exact noise of ``x_t`` towards the known ``x0`` (ignores the conditioning channels)."""

    def __init__(self, x0: torch.Tensor, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.x0 = x0
        self.alphas_cumprod = alphas_cumprod.double()
        self.timesteps: list[torch.Tensor] = []

    def forward(self, sample, timestep, encoder_hidden_states=None, deepcache=None, step_index=None):
        self.timesteps.append(timestep)
        a = self.alphas_cumprod[int(timestep)]
        x = sample[:, :4]
        x0 = self.x0.expand_as(x)
        return UNetOutput(sample=(x - a.sqrt() * x0) / (1 - a).sqrt())


def _cond(b: int, f: int, g: torch.Generator) -> list[torch.Tensor]:
    return [torch.rand(b, 1, f, 8, 8, generator=g, dtype=torch.float64), torch.randn(b, 4, f, 8, 8, generator=g, dtype=torch.float64),
            torch.randn(b, 4, f, 8, 8, generator=g, dtype=torch.float64)]


@pytest.mark.parametrize("name", SCHEDULERS)
def test_exact_noise_prediction_lands_on_the_clean_latents(name):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 4, 3, 8, 8, generator=g, dtype=torch.float64)
    noise = torch.randn(1, 4, 3, 8, 8, generator=g, dtype=torch.float64)
    scheduler = make_scheduler(name)
    steps = DEFAULT_STEPS[name]
    scheduler.set_timesteps(steps)
    oracle = OracleUNet(x0, scheduler.alphas_cumprod)
    audio = torch.randn(3, 50, AUDIO_D, generator=g, dtype=torch.float64)
    seen: list[int] = []
    out = denoise_block(oracle, scheduler, noise.clone(), *_cond(1, 3, g), audio, guidance_scale=1.5,
                        step_callback=lambda j, t, x: seen.append(t))
    expected_t = [int(t) for t in scheduler.timesteps]
    assert seen == expected_t and all(isinstance(t, int) for t in seen)
    # the UNet got the same timesteps, as 0-d tensors on the latents' device (no host copy per step)
    assert [int(t) for t in oracle.timesteps] == expected_t
    assert all(isinstance(t, torch.Tensor) and t.ndim == 0 and t.device == noise.device for t in oracle.timesteps)
    if name == "ddim":
        a_T = scheduler.alphas_cumprod[expected_t[0]].double()
        eps_T = (noise - a_T.sqrt() * x0) / (1 - a_T).sqrt()
        a_final = scheduler.final_alpha_cumprod.double()
        target = a_final.sqrt() * x0 + (1 - a_final).sqrt() * eps_T
    else:
        assert expected_t == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]  # "trailing" spacing, 10 steps
        target = x0
    torch.testing.assert_close(out, target, rtol=0, atol=1e-5)
    assert (out - noise).abs().max() > 0.5  # it did move


def test_make_scheduler_rejects_unknown_names():
    with pytest.raises(ValueError, match="ddim, dpmpp"):
        make_scheduler("euler")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    unet = UNet3DConditionModel(UNet3DConfig.tiny()).eval()
    vae = AutoencoderKL(block_out_channels=(8, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4,
                        norm_num_groups=4).eval()
    return unet, vae


def _inputs(n: int):
    g = torch.Generator().manual_seed(3)
    faces = torch.randint(0, 256, (n, 3, R, R), generator=g, dtype=torch.uint8)
    mask = torch.ones(3, R, R, dtype=torch.float64)
    mask[:, R // 2:, 8:-8] = 0
    return faces, torch.randn(n, 50, AUDIO_D, generator=g), mask


def test_dpmpp_history_is_reset_per_block(tiny):
    unet, _ = tiny
    scheduler = make_scheduler("dpmpp")
    scheduler.set_timesteps(4)
    g = torch.Generator().manual_seed(1)
    lat = torch.randn(1, 4, 2, 8, 8, generator=g)
    cond = [c.float() for c in _cond(1, 2, g)]
    audio = torch.randn(2, 50, AUDIO_D, generator=g)
    with torch.no_grad():
        first = denoise_block(unet, scheduler, lat.clone(), *cond, audio)
        second = denoise_block(unet, scheduler, lat.clone(), *cond, audio)  # a stale history would change this
    assert torch.equal(first, second)


@pytest.mark.parametrize("deepcache", [True, False])
def test_dpmpp_window_batch_matches_sequential(tiny, deepcache):
    unet, vae = (copy.deepcopy(m).double() for m in tiny)  # float64: see test_pipeline's batching test
    faces, audio, mask = _inputs(33)
    pipe = LatentSyncPipeline(unet, vae, make_scheduler("dpmpp"))
    kw = dict(num_inference_steps=4, deepcache=deepcache, return_latents=True, return_float=True, dtype=torch.float64)
    one = pipe.generate(faces, audio, mask, **kw)
    two = pipe.generate(faces, audio, mask, window_batch=2, **kw)
    ddim = LatentSyncPipeline(unet, vae, make_scheduler("ddim")).generate(faces, audio, mask, **kw)
    for a, b, c in zip(one.final_latents, two.final_latents, ddim.final_latents):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        assert (a - c).abs().max() > 1e-3  # the sampler really changed
    torch.testing.assert_close(one.faces_float, two.faces_float, rtol=0, atol=1e-5)


def test_engine_scheduler_option(tiny):
    with pytest.raises(EngineError, match="scheduler must be one of ddim, dpmpp"):
        EngineParams(scheduler="euler")
    unet, vae = (copy.deepcopy(m) for m in tiny)
    faces, audio, mask = _inputs(3)
    model = LatentSyncModel.from_components(unet, vae, None, mask=mask, version="tiny", resolution=R)
    engine = LatentSyncEngine(model=model, device="cpu")
    res = engine.generate(faces, audio, mask, params=EngineParams(steps=2, scheduler="dpmpp", dtype="fp32"))
    assert res.settings_used["scheduler"] == "dpmpp" and res.faces.shape == (3, 3, R, R)
    assert EngineParams().scheduler == "ddim"  # off by default
