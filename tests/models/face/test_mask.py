"""The generated LatentSync mask against the official ``mask.png`` (SPEC 5.1), and `load_mask(None, R)`."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from lipline.models.face.mask import official_mask
from lipline.models.latentsync.mask import load_mask, mask_latents

# Honest bounds for the traced outline (see lipline.models.face.mask): measured 23 pixels at 256.
MAX_DIFFERING_PIXELS_256 = 23


@pytest.fixture(scope="module")
def official_png(conformance_dir) -> np.ndarray:
    """The official mask as RGB uint8 (256, 256, 3)."""
    return cv2.cvtColor(cv2.imread(str(conformance_dir / "mask.png")), cv2.COLOR_BGR2RGB)


def test_generated_mask_format():
    mask = official_mask()
    assert mask.shape == (256, 256, 3) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 255}
    assert (mask == mask[:, :, :1]).all()  # 3 identical channels
    zero = mask[:, :, 0] == 0
    # the U: cheek bands beside a kept nose gap, a regenerated lower face, untouched eyes and forehead
    assert not zero[:94].any() and not zero[243:].any()
    assert zero[110, 9:78].all() and not zero[110, 78:178].any() and zero[110, 178:247].all()
    assert zero[200, 40:220].all()
    with pytest.raises(ValueError):
        official_mask(0)


def test_generated_mask_close_to_official_at_256(official_png):
    differing = (official_mask() != official_png).any(axis=2)
    assert differing.sum() <= MAX_DIFFERING_PIXELS_256, f"{differing.sum()} pixels differ"
    # every difference is on the outline: within 1 px of a pixel of the other value in the official mask
    zero = (official_png[:, :, 0] == 0).astype(np.uint8)
    edge = cv2.dilate(zero, np.ones((3, 3), np.uint8)) != cv2.erode(zero, np.ones((3, 3), np.uint8))
    assert edge[differing].all()


def test_generated_mask_close_to_official_at_512(official_png):
    """SPEC 5.1: the 256 px image is Lanczos-resized; compare with resizing the official PNG."""
    ours = official_mask(512)
    theirs = cv2.resize(official_png, (512, 512), interpolation=cv2.INTER_LANCZOS4)
    assert ours.shape == (512, 512, 3)
    differing = (ours != theirs).any(axis=2)
    # Lanczos-4 at scale 2 spreads a 256 px pixel over +-8 output pixels: every difference at 512 must come from
    # one of the pixels that differ at 256 (measured: 2007 of 262,144 pixels differ, 0.77 %).
    diff256 = (official_mask() != official_png).any(axis=2).astype(np.uint8)
    reach = cv2.dilate(cv2.resize(diff256, (512, 512), interpolation=cv2.INTER_NEAREST), np.ones((17, 17), np.uint8))
    assert not (differing & ~reach.astype(bool)).any()
    assert differing.mean() < 0.01, f"{differing.mean():.3%} of pixels differ"


def test_load_mask_none_is_the_generated_mask():
    for resolution in (256, 512):
        mask = load_mask(None, resolution)
        assert mask.dtype == torch.float64 and tuple(mask.shape) == (3, resolution, resolution)
        expected = torch.from_numpy(official_mask(resolution)).permute(2, 0, 1).double() / 255.0
        assert torch.equal(mask, expected)


def test_load_mask_none_matches_the_file_path(official_png, tmp_path):
    """A PNG of the generated mask loads to exactly the same tensor as path=None (same read/resize path)."""
    path = tmp_path / "generated.png"
    cv2.imwrite(str(path), cv2.cvtColor(official_mask(), cv2.COLOR_RGB2BGR))
    for resolution in (256, 512):
        assert torch.equal(load_mask(path, resolution), load_mask(None, resolution))


def test_latent_mask_close_to_official(conformance_dir):
    """What the UNet sees: the nearest-downsampled mask at R/8; 256 px: at most 2 of 1024 cells differ."""
    ours = mask_latents(load_mask(None, 256), 1, 32)
    theirs = mask_latents(load_mask(conformance_dir / "mask.png", 256), 1, 32)
    assert (ours != theirs).sum() <= 2
