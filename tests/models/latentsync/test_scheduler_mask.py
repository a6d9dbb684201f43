"""DDIM scheduler configuration and the fixed mask (SPEC 5.1, 6.2, 7)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from lipline.errors import EngineError
from lipline.models.latentsync.mask import load_mask, mask_latents
from lipline.models.latentsync.scheduler import make_ddim_scheduler, timesteps_for


def test_timesteps_leading_offset_one():
    assert timesteps_for(20) == list(range(951, 0, -50))
    s = make_ddim_scheduler()
    assert s.init_noise_sigma == 1.0
    assert float(s.final_alpha_cumprod) == pytest.approx(float(s.alphas_cumprod[0]))
    assert not s.config.clip_sample and s.config.prediction_type == "epsilon"


def test_ddim_step_formula_eta0():
    s = make_ddim_scheduler()
    s.set_timesteps(20)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 4, 2, 4, 4, generator=g), torch.randn(1, 4, 2, 4, 4, generator=g)
    a_t, a_prev = s.alphas_cumprod[951], s.alphas_cumprod[901]
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    torch.testing.assert_close(s.step(eps, 951, x).prev_sample, a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps)


@pytest.fixture
def synthetic_mask(tmp_path):
    img = np.full((256, 256, 3), 255, np.uint8)
    img[150:, 40:216] = 0
    path = tmp_path / "mask.png"
    cv2.imwrite(str(path), img)
    return path


def test_load_mask_float64_and_resize(synthetic_mask):
    m = load_mask(synthetic_mask, 256)
    assert m.dtype == torch.float64 and m.shape == (3, 256, 256)
    assert set(torch.unique(m).tolist()) == {0.0, 1.0}
    m512 = load_mask(synthetic_mask, 512)
    assert m512.shape == (3, 512, 512)
    assert ((m512 * 255).round() == m512 * 255).all()  # values k/255 (uint8 Lanczos, saturating)


def test_load_mask_missing(tmp_path):
    with pytest.raises(EngineError, match="mask"):
        load_mask(tmp_path / "nope.png", 256)


def test_mask_latents_nearest_per_frame(synthetic_mask):
    m = load_mask(synthetic_mask, 256)
    ml = mask_latents(m, 5, 32)
    assert ml.shape == (1, 1, 5, 32, 32) and ml.dtype == torch.float32
    torch.testing.assert_close(ml[0, 0, 3], m[0, ::8, ::8].float())


# ---------------------------------------------------------------------------------------------- golden


@pytest.fixture(scope="module")
def golden(conformance_dir):
    from safetensors.torch import load_file

    return load_file(str(conformance_dir / "mask_sched_golden.safetensors"))


@pytest.mark.conformance
def test_golden_scheduler(golden, conformance_manifest):
    info = conformance_manifest["files"]["mask_sched_golden.safetensors"]
    s = make_ddim_scheduler()
    for key, value in info["scheduler_config"].items():
        if not key.startswith("_") and key in s.config:
            assert s.config[key] == value, key
    s.set_timesteps(20)
    assert torch.equal(s.timesteps, golden["ddim.timesteps_20"])
    torch.testing.assert_close(s.alphas_cumprod, golden["ddim.alphas_cumprod"], rtol=0, atol=1e-6)
    assert float(s.final_alpha_cumprod) == pytest.approx(info["final_alpha_cumprod"], abs=1e-7)
    x, eps = golden["ddim.step.x"], golden["ddim.step.eps"]
    torch.testing.assert_close(s.step(eps, 951, x).prev_sample, golden["ddim.step.prev_t951"], rtol=0, atol=1e-6)
    torch.testing.assert_close(s.step(eps, 1, x).prev_sample, golden["ddim.step.prev_t1"], rtol=0, atol=1e-6)
    s.set_timesteps(50)
    assert torch.equal(s.timesteps, golden["ddim.timesteps_50"])


@pytest.mark.conformance
@pytest.mark.parametrize("resolution,latent", [(256, 32), (512, 64)])
def test_golden_mask(conformance_dir, golden, resolution, latent):
    m = load_mask(conformance_dir / "mask.png", resolution)
    assert m.dtype == torch.float64
    assert torch.equal((m * 255).round().to(torch.uint8)[0], golden[f"mask{resolution}_u8"])
    assert torch.equal(m[0], m[1]) and torch.equal(m[0], m[2])
    assert torch.equal(mask_latents(m, 2, latent)[0, 0, 1], golden[f"mask_latent_{latent}"])
