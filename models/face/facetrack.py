"""`FaceTrack`: the chosen face per frame of one video, its unusable spans, and a compact file format.

File format (``FaceTrack.save``): one ``.npz`` (zip, deflate) holding a JSON header (``header``: format version,
size, fps, rotation, detector, choice, counts, spans) and per-frame arrays:

* ``reason`` (n,) uint8 (0 usable, else an index into `REASONS`), ``interpolated`` (n,) bool,
  ``scores`` (n,) float32, ``yaw`` (n,) float32, ``anchors`` (n, 3, 2) float64 (exact; they are integers);
* landmarks, all 478 points (useful for QC and the mask), as float16 offsets from the face box's centre in
  units of the box height, plus that centre and height in float32: error ≤ 2.5e-4 × face height
  (0.25 px on a 1000-px face). ~2 KB per frame before compression (10 min at 30 fps ≈ 35 MB).

Boxes are not stored: they are the landmarks' tight box, recomputed on load.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lipline.models.face.anchors import anchors_from_mesh

REASONS = ("ok", "no face", "too small", "too turned")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class GapSpan:
    """Frames ``start`` ≤ i < ``end`` have no usable face, for ``reason`` (one of `REASONS` but "ok")."""

    start: int
    end: int
    reason: str

    def to_dict(self, fps: float) -> dict:
        return {"start": self.start, "end": self.end, "reason": self.reason,
                "start_s": round(self.start / fps, 3) if fps else None,
                "end_s": round(self.end / fps, 3) if fps else None}


@dataclass
class FaceTrack:
    """The chosen face in every frame of a video (n frames, upright coordinates in pixels).

    Per frame: ``reason`` (n,) uint8 code into `REASONS` (0 = usable); ``interpolated`` (n,) bool (filled from
    neighbours); ``landmarks`` (n, 478, 2) float32 (NaN where no face was landmarked); ``scores`` (n,) float32
    (the last matched detection's score); ``yaw`` (n,) float32 degrees. Derived by `refresh`: ``valid`` (n,)
    bool, ``boxes`` (n, 4) float32 x,y,w,h (landmarks' tight box, NaN without landmarks), ``anchors`` (n, 3, 2)
    float64 (official anchors, rounded half-even; NaN without landmarks), ``spans``.
    """

    reason: np.ndarray
    interpolated: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray
    yaw: np.ndarray
    width: int
    height: int
    fps: float
    rotation: int  # display rotation that was applied, degrees counter-clockwise
    detector: str  # name@version
    choice: str
    frames_detected: int
    detect_every: int
    landmark_every: int = 1
    valid: np.ndarray = field(init=False, repr=False)
    boxes: np.ndarray = field(init=False, repr=False)
    anchors: np.ndarray = field(init=False, repr=False)
    spans: list[GapSpan] = field(init=False)

    def __post_init__(self) -> None:
        n = self.reason.shape[0]
        for name, shape in (("interpolated", (n,)), ("landmarks", (n, 478, 2)), ("scores", (n,)), ("yaw", (n,))):
            if getattr(self, name).shape != shape:
                raise ValueError(f"FaceTrack.{name} has shape {getattr(self, name).shape}, expected {shape}")
        self.refresh()

    @classmethod
    def from_frames(cls, *, reason: np.ndarray, landmarks: np.ndarray, **kwargs) -> "FaceTrack":
        return cls(reason=reason, interpolated=np.zeros(reason.shape, bool), landmarks=landmarks, **kwargs)

    def refresh(self) -> None:
        """Recompute the derived fields after ``reason``/``landmarks`` changed."""
        self.valid = self.reason == 0
        lo = self.landmarks.min(axis=1)  # NaN rows (no landmarks) stay NaN
        hi = self.landmarks.max(axis=1)
        self.boxes = np.concatenate([lo, hi - lo], axis=1).astype(np.float32)
        self.anchors = anchors_from_mesh(self.landmarks)
        self.spans = _spans(self.reason)

    @property
    def frame_count(self) -> int:
        return int(self.reason.shape[0])

    def summary(self) -> dict:
        """Counts, settings and spans as plain JSON types (for manifests)."""
        return {"frames": self.frame_count, "valid": int(self.valid.sum()),
                "interpolated": int(self.interpolated.sum()), "frames_detected": self.frames_detected,
                "detect_every": self.detect_every, "landmark_every": self.landmark_every,
                "width": self.width, "height": self.height,
                "fps": self.fps, "rotation": self.rotation, "detector": self.detector, "choice": self.choice,
                "spans": [s.to_dict(self.fps) for s in self.spans]}

    def to_json(self) -> str:
        return json.dumps(self.summary())

    def save(self, path: str | Path) -> None:
        """Write the compact ``.npz`` described in the module docstring (the exact path, no suffix added)."""
        header = {"format": FORMAT_VERSION, **self.summary()}
        centre = np.nan_to_num(self.boxes[:, :2] + self.boxes[:, 2:] / 2).astype(np.float32)
        scale = np.nan_to_num(np.maximum(self.boxes[:, 3], 1.0), nan=1.0).astype(np.float32)
        rel = ((self.landmarks - centre[:, None, :]) / scale[:, None, None]).astype(np.float16)
        buf = io.BytesIO()
        np.savez_compressed(buf, header=np.frombuffer(json.dumps(header).encode(), np.uint8), reason=self.reason,
                            interpolated=self.interpolated, scores=self.scores, yaw=self.yaw, anchors=self.anchors,
                            lm_rel=rel, lm_centre=centre, lm_scale=scale)
        Path(path).write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "FaceTrack":
        """Read a file written by `save`. Anchors are the stored (exact) ones, not recomputed."""
        with np.load(io.BytesIO(Path(path).read_bytes())) as z:
            header = json.loads(z["header"].tobytes())
            if header.get("format") != FORMAT_VERSION:
                raise ValueError(f"{path}: face-track format {header.get('format')}, expected {FORMAT_VERSION}")
            landmarks = (z["lm_rel"].astype(np.float32) * z["lm_scale"][:, None, None]
                         + z["lm_centre"][:, None, :]).astype(np.float32)
            track = cls(reason=z["reason"], interpolated=z["interpolated"], landmarks=landmarks, scores=z["scores"],
                        yaw=z["yaw"], width=header["width"], height=header["height"], fps=header["fps"],
                        rotation=header["rotation"], detector=header["detector"], choice=header["choice"],
                        frames_detected=header["frames_detected"], detect_every=header["detect_every"],
                        landmark_every=header.get("landmark_every", 1))
            track.anchors = z["anchors"]
        return track


def _spans(reason: np.ndarray) -> list[GapSpan]:
    """Maximal runs of equal non-zero reason codes."""
    spans: list[GapSpan] = []
    if reason.size == 0:
        return spans
    change = np.flatnonzero(np.diff(reason.astype(np.int16))) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [reason.size]])
    for s, e in zip(starts, ends):
        if reason[s]:
            spans.append(GapSpan(int(s), int(e), REASONS[int(reason[s])]))
    return spans
