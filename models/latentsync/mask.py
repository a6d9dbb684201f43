"""LatentSync's fixed lower-face mask (SPEC 5.1, 6.2).

The official ``mask.png`` (256x256, 3 identical channels, 0 = regenerate, 255 = keep) ships with the official
code, not with this repository. `load_mask` reads it from a path, or, with ``path=None``, uses the generated
approximation `lipline.models.face.mask.official_mask` (23 boundary pixels of 65,536 differ at 256).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lipline.errors import EngineError


def load_mask(path: str | os.PathLike | None, resolution: int) -> torch.Tensor:
    """Read the mask image and resize it to the working resolution.

    OpenCV read (BGR) -> RGB -> Lanczos-4 resize on uint8 (saturating) -> / 255.

    Args:
        path: mask image (``mask.png``), or None for the generated mask (same 256 px image -> same resize).
        resolution: working face resolution R (256 or 512).

    Returns:
        float64 ``[3, R, R]`` in [0, 1]; 1 = keep the original pixel, 0 = generated region.
    """
    import cv2

    if path is None:
        from lipline.models.face.mask import official_mask

        image = official_mask(resolution)  # [R, R, 3] uint8 RGB
    else:
        path = Path(path)
        image = cv2.imread(str(path))  # [H, W, 3] uint8 BGR
        if image is None:
            raise EngineError(f"{path}: mask image not found or unreadable")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        image = cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
    mask = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # [R, R, 3] -> [3, R, R]
    return mask.to(torch.float64) / 255.0


def mask_latents(mask: torch.Tensor, num_frames: int, latent_size: int | tuple[int, int], dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """The mask at latent resolution, one per frame (SPEC 6.2 step 1).

    Args:
        mask: ``[3, R, R]`` (or ``[R, R]``) mask; channel 0 is used.
        num_frames: f.
        latent_size: ``R / 8`` (int or (h, w)).

    Returns:
        ``[1, 1, f, h, w]`` in ``dtype`` (nearest interpolation).
    """
    if isinstance(latent_size, int):
        latent_size = (latent_size, latent_size)
    m = mask[0] if mask.ndim == 3 else mask  # [R, R]
    m = m[None, None].expand(num_frames, 1, *m.shape)  # [f, 1, R, R]
    m = m.to(device=device, dtype=dtype)
    m = F.interpolate(m, size=latent_size)  # nearest -> [f, 1, h, w]
    return m.permute(1, 0, 2, 3).unsqueeze(0)  # [f, 1, h, w] -> [1, 1, f, h, w]


__all__ = ["load_mask", "mask_latents"]
