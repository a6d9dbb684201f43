"""Helpers of the GPU benchmarks: mouth-crop PSNR/SSIM (bench/quality.py), peak table and FLOP bookkeeping (bench/flops.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.flops import ModelFlops, mfu, peak_tflops
from bench.quality import mouth_box, mouth_crop_quality, psnr


def _mask(r: int = 32) -> torch.Tensor:
    mask = torch.ones(3, r, r, dtype=torch.float64)
    mask[:, 18:30, 4:28] = 0
    return mask


def test_mouth_box_is_the_regenerated_region():
    assert mouth_box(_mask()) == (18, 30, 4, 28)
    with pytest.raises(ValueError, match="regenerates no pixel"):
        mouth_box(torch.ones(3, 8, 8))


def test_psnr_known_values():
    a = np.zeros((4, 4), np.uint8)
    assert psnr(a, a) == math.inf
    b = np.full((4, 4), 255, np.uint8)
    assert psnr(a, b) == pytest.approx(0.0)
    c = a.copy()
    c[0, 0] = 16  # mse = 256 / 16 = 16 -> 10 log10(255^2 / 16)
    assert psnr(a, c) == pytest.approx(10 * math.log10(255**2 / 16))


def test_mouth_crop_quality_scores_only_the_crop():
    g = torch.Generator().manual_seed(0)
    faces = torch.randint(0, 256, (3, 3, 32, 32), generator=g, dtype=torch.uint8)
    outside = faces.clone()
    outside[:, :, :18] = 0  # changes outside the crop do not count
    same = mouth_crop_quality(faces, outside, _mask())
    assert same["psnr_db"] == math.inf and same["ssim"] == pytest.approx(1.0) and same["max_abs"] == 0
    noisy = faces.clone()
    noisy[:, :, 18:30, 4:28] = (noisy[:, :, 18:30, 4:28].int() + 40).clamp(0, 255).to(torch.uint8)
    q = mouth_crop_quality(faces, noisy, _mask())
    assert 5 < q["psnr_db"] < 40 and q["ssim"] < 0.99 and 0 < q["max_abs"] <= 40
    with pytest.raises(ValueError, match="differ in shape"):
        mouth_crop_quality(faces, faces[:2], _mask())


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.4),
                                        ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L40S", 362.05), ("NVIDIA A10G", None),
                                        ("NVIDIA GeForce RTX 4090", 165.2), ("Quadro K600", None)])
def test_peak_table(name, peak):
    assert peak_tflops(name) == peak


def test_model_flops_schedule():
    f = ModelFlops(frames=16, cfg_batch=2, unet_full=100, unet_cached=10, vae_encode=7, vae_decode=5)
    # 20 steps with DeepCache (interval 3): steps 0, 3, ..., 18 full (7), 13 cached
    assert f.window(20, deepcache=True) == 2 * 7 + 7 * 100 + 13 * 10 + 5
    assert f.window(20, deepcache=False) == 2 * 7 + 20 * 100 + 5
    assert f.window(10, deepcache=True) == 2 * 7 + 4 * 100 + 6 * 10 + 5
    assert f.run(32, 20, False) == 2 * f.window(20, False)
    assert mfu(2e12, 2.0, 1.0) == pytest.approx(1.0) and mfu(1.0, 1.0, None) is None
