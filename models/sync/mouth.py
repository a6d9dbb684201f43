"""Per-frame mouth opening from MediaPipe FaceMesh landmarks (the face track's 478 points).

Opening = mean gap between three pairs of inner-lip points (left, middle, right of the mouth), divided by the
distance between the outer eye corners. The eye distance does not change when the jaw drops (the face box does:
it includes the chin), so the ratio is independent of the face's size in the frame and of the camera distance.
"""

from __future__ import annotations

import numpy as np

#: (upper inner lip, lower inner lip) point pairs of the 478-point mesh: left of centre, centre, right of centre.
INNER_LIP_PAIRS = ((82, 87), (13, 14), (312, 317))
#: Outer eye corners (image-left, image-right).
EYE_OUTER = (33, 263)


def mouth_opening(landmarks: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Mouth opening per frame.

    Args:
        landmarks: (n, 478, 2) points in pixels (NaN where the frame has no face).
        valid: optional (n,) bool; frames where it is False get NaN (e.g. `FaceTrack.valid`).
    Returns:
        (n,) float64: inner-lip gap / inter-ocular distance (about 0 closed, 0.2-0.6 wide open); NaN without a face.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 3 or points.shape[1:] != (478, 2):
        raise ValueError(f"landmarks must have shape (n, 478, 2), got {points.shape}")
    upper = points[:, [a for a, _ in INNER_LIP_PAIRS]]  # [n, 3, 2]
    lower = points[:, [b for _, b in INNER_LIP_PAIRS]]  # [n, 3, 2]
    gap = np.linalg.norm(lower - upper, axis=2).mean(axis=1)  # [n]
    eyes = np.linalg.norm(points[:, EYE_OUTER[1]] - points[:, EYE_OUTER[0]], axis=1)  # [n]
    with np.errstate(invalid="ignore", divide="ignore"):
        opening = np.where(eyes > 1e-6, gap / eyes, np.nan)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != opening.shape:
            raise ValueError(f"valid has shape {valid.shape}, landmarks have {opening.shape[0]} frames")
        opening[~valid] = np.nan
    return opening


def track_mouth_opening(track) -> np.ndarray:
    """`mouth_opening` of a `FaceTrack` (its usable frames; NaN elsewhere)."""
    return mouth_opening(track.landmarks, track.valid)
