"""Quality difference between two generated face sets: PSNR and SSIM of the generated mouth crops.

Used to compare a faster sampler (DPM-Solver++ at 10 steps) against the official 20-step DDIM on the same inputs
and seed. The crop is the bounding box of the regenerated region of the mask (mask channel 0 == 0): the pixels
outside it are pasted back from the input and identical in both sets, so they would only inflate the scores.
SSIM is scikit-image's `structural_similarity` (Gaussian window, sigma 1.5, the Wang et al. 2004 settings) on
each frame's RGB crop; PSNR is over the whole crop stack with data range 255.
"""

from __future__ import annotations

import numpy as np
import torch


def mouth_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` (exclusive ends) of the regenerated region of a ``[3, R, R]`` mask (0 = regenerate)."""
    gen = (mask[0] == 0).nonzero()
    if gen.numel() == 0:
        raise ValueError("the mask regenerates no pixel (no zero in channel 0)")
    (top, left), (bottom, right) = gen.min(0).values.tolist(), gen.max(0).values.tolist()
    return top, bottom + 1, left, right + 1


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of two same-shape arrays; ``inf`` when they are equal."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)


def mouth_crop_quality(faces_a: torch.Tensor, faces_b: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """PSNR (dB) and mean SSIM of the mouth crops of two uint8 ``[N, 3, R, R]`` face sets.

    Returns ``{"psnr_db", "ssim", "max_abs"}`` (max_abs: largest pixel difference in the crops, 0..255).
    """
    from skimage.metrics import structural_similarity

    if faces_a.shape != faces_b.shape:
        raise ValueError(f"face sets differ in shape: {tuple(faces_a.shape)} vs {tuple(faces_b.shape)}")
    top, bottom, left, right = mouth_box(mask)
    a = faces_a[:, :, top:bottom, left:right].permute(0, 2, 3, 1).numpy()  # [N, 3, h, w] -> [N, h, w, 3]
    b = faces_b[:, :, top:bottom, left:right].permute(0, 2, 3, 1).numpy()
    ssim = [structural_similarity(x, y, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False) for x, y in zip(a, b)]
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"psnr_db": psnr(a, b), "ssim": float(np.mean(ssim)), "max_abs": float(diff.max())}


__all__ = ["mouth_box", "mouth_crop_quality", "psnr"]
