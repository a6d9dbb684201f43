"""A generated stand-in for LatentSync's fixed mask (``latentsync/utils/mask.png``), so no file is needed.

The official mask is 256x256, 3 identical channels, 255 = keep the original pixel, 0 = regenerate. Its zero region
is a "U": two cheek bands beside the nose (rows 95-127, columns 9-77 and 178-246, the nose gap 78-177 is kept)
over a rounded lower face (rows 128-242, columns 9-247, narrowing to the chin). The outline below is a 38-vertex
polygon traced from that shape (OpenCV contour simplified with a 0.7 px tolerance, vertices then nudged by one
pixel where it lowered the error) and filled with `cv2.fillPoly`. The chin curve is hand-drawn in the original,
not a simple ellipse, so the fill is an approximation: at 256 px it differs from the official PNG at 23 of
65,536 pixels, all on the boundary (tests/models/face/test_mask.py measures it). Pass the official file
(``LIPLINE_LATENTSYNC_MASK`` or ``mask_path=``) for bit-exact conformance with the official runs.
"""

from __future__ import annotations

import cv2
import numpy as np

MASK_SIZE = 256

# (x, y) vertices at 256x256 of the region to regenerate, clockwise from the top of the left cheek band.
OUTLINE_256 = (
    (9, 95), (9, 135), (10, 136), (11, 163), (12, 164), (12, 170), (23, 189), (36, 204), (49, 215), (59, 221),
    (82, 233), (91, 236), (95, 238), (102, 239), (109, 241), (152, 242), (153, 241), (163, 239), (174, 234),
    (183, 231), (202, 220), (212, 212), (223, 201), (240, 177), (244, 169), (245, 150), (246, 148), (246, 135),
    (247, 134), (247, 128), (246, 127), (246, 95), (178, 95), (178, 127), (177, 128), (78, 128), (77, 127), (77, 95),
)


def official_mask(resolution: int = MASK_SIZE) -> np.ndarray:
    """The generated mask image, as the official ``mask.png`` would be at ``resolution`` (SPEC 5.1).

    At 256 the polygon is filled directly; any other resolution resizes the 256 image with OpenCV Lanczos-4 on
    uint8, exactly what the official code does to ``mask.png`` (edges then take intermediate values).

    Args:
        resolution: side R of the square mask.

    Returns:
        (R, R, 3) uint8 RGB, 3 identical channels; 255 = keep, 0 = regenerate.
    """
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    mask = np.full((MASK_SIZE, MASK_SIZE), 255, dtype=np.uint8)
    cv2.fillPoly(mask, [np.array(OUTLINE_256, dtype=np.int32)], 0)
    mask = np.repeat(mask[:, :, None], 3, axis=2)  # [256, 256] -> [256, 256, 3]
    if resolution != MASK_SIZE:
        mask = cv2.resize(mask, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
    return mask


__all__ = ["MASK_SIZE", "OUTLINE_256", "official_mask"]
