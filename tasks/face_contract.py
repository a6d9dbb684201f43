"""Face measurements for the video data contract: is there one speaker's face, big enough, in most of the video?

Detection only (no landmarks, no torch) on ~3 evenly spaced frames per second (`models.face.track.sample_faces`),
so `lipline validate` stays fast on an operator's laptop. The rules live in ``data_contracts/video.json``:

* ``video.one_face`` (fail): exactly one face in at least 90 % of the sampled frames;
* ``video.face_size`` (warn): the face's height is at least 10 % of the frame's or at least 96 px;
* ``video.several_faces`` (warn): two or more faces in a sampled frame; the face choice in force decides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SAMPLES_PER_SECOND = 3.0
MIN_FACE_FRACTION = 0.10
MIN_FACE_PX = 96


def measure_faces(path: Path, choice: str = "largest", per_second: float = SAMPLES_PER_SECOND) -> dict[str, Any]:
    """Face columns of the video's measurement row (None when no frame could be sampled)."""
    from lipline.models.face.track import sample_faces

    samples = sample_faces(path, per_second=per_second)
    if not samples:
        return {"face_one_share": None}
    n = len(samples)
    one = sum(1 for s in samples if len(s.faces) == 1)
    several = sum(1 for s in samples if len(s.faces) >= 2)
    heights = [max(f.box.h for f in s.faces) for s in samples if s.faces]
    frame_h = samples[0].height
    height_px = sorted(heights)[len(heights) // 2] if heights else None
    row: dict[str, Any] = {
        "face_samples": n,
        "face_one_share": round(one / n, 4), "face_one_pct": round(100 * one / n, 1),
        "face_none_pct": round(100 * sum(1 for s in samples if not s.faces) / n, 1),
        "face_several_share": round(several / n, 4), "face_several_pct": round(100 * several / n, 1),
        "face_choice": choice,
    }
    if height_px is not None:
        row.update(face_height_px=round(float(height_px), 1),
                   face_height_pct=round(100 * float(height_px) / frame_h, 1),
                   face_big_enough=bool(height_px >= MIN_FACE_PX or height_px >= MIN_FACE_FRACTION * frame_h))
    return row


__all__ = ["measure_faces"]
