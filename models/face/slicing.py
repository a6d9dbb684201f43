"""A face track for a sequence of source frames (a segment, a ping-pong run): `take`."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from lipline.models.face.facetrack import FaceTrack


def take(track: FaceTrack, frames: Sequence[int]) -> FaceTrack:
    """The track of source frames ``frames`` in that order (repeats allowed): entry k describes ``frames[k]``."""
    idx = np.asarray(frames, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= track.frame_count):
        raise IndexError(f"frames {int(idx.min())}..{int(idx.max())} outside the track's {track.frame_count} frames")
    sliced = replace(track, reason=track.reason[idx], interpolated=track.interpolated[idx],
                     landmarks=track.landmarks[idx], scores=track.scores[idx], yaw=track.yaw[idx])
    sliced.anchors = track.anchors[idx]  # keep the stored (exact) anchors
    return sliced


__all__ = ["take"]
