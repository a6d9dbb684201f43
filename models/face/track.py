"""The speaker's face through a whole video: `compute_face_track` → `FaceTrack` (never raises for a missing face).

Per frame (streamed; one frame in memory):

1. **Detect** every ``detect_every`` frames, and on every frame while the chosen face is lost.
2. **Choose once**: at the first frame with faces the `FaceChoice` picks one; from then on that person is
   tracked. On detection frames the tracked box is matched to the detection it overlaps most (IoU ≥ 0.3),
   which refreshes the score; the other detections are remembered as "other people".
3. **Landmarks** every frame with FaceMesh in tracking mode on a region around the previous frame's landmarks
   (`FaceAnalyzer.landmarks`), so the mesh follows the same person between detections even when another face
   is larger or crosses. If the mesh loses the face, the track is *lost*.
4. **Re-acquire** after a loss: detections that overlap a remembered other person (IoU ≥ 0.3) are excluded;
   among the rest the one nearest the last known position is taken. (A new person entering while the speaker
   is away would be taken too; without appearance features nothing better is possible.)
5. **Usable?** A landmarked face lower than `MIN_FACE_PX` is "too small"; one turned more than `MAX_YAW_DEG`
   is "too turned"; a frame without the face is "no face".
6. **Gaps**: unusable runs of ≤ `MAX_INTERPOLATED_GAP` frames between two usable frames with plausible motion
   between them (≤ one face height per frame, size within 1.5x: not across a cut) are filled by linear interpolation of boxes and landmarks (anchors recomputed) and flagged ``interpolated``; longer runs become
   `GapSpan`s whose frames the engine passes through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lipline.models.face.anchors import anchors_from_mesh
from lipline.models.face.choice import FaceChoice
from lipline.models.face.detect import (MAX_YAW_DEG, MIN_FACE_PX, Box, Detection, FaceAnalyzer, detector_version,
                                        face_problem)
from lipline.models.face.facetrack import REASONS, FaceTrack, GapSpan  # noqa: F401 - re-exported
from lipline.models.face.video import UprightFrame, iter_frames, iter_upright

MAX_INTERPOLATED_GAP = 3
MATCH_IOU = 0.3
N_POINTS = 478

Progress = Callable[[int, int], None]  # (frames done, estimated total)


@dataclass(frozen=True)
class FaceSample:
    """Detection-only look at one sampled frame (for the face data contract)."""

    frame_index: int
    time_s: float
    width: int
    height: int
    faces: tuple[Detection, ...]  # left to right


class _Tracker:
    """The per-frame state machine of `compute_face_track` (steps 1–5 of the module docstring)."""

    def __init__(self, analyzer: FaceAnalyzer, choice: FaceChoice, detect_every: int) -> None:
        self.analyzer, self.choice, self.detect_every = analyzer, choice, detect_every
        self.chosen = False  # the choice has been applied
        self.box: Box | None = None  # current landmark box of the chosen face (None = lost)
        self.last_box: Box | None = None
        self.score = 0.0
        self.others: list[Box] = []
        self.since_detect = detect_every
        self.frames_detected = 0

    def step(self, frame: UprightFrame, skip_mesh: bool = False) -> tuple[int, np.ndarray | None, float, float]:
        """One frame → (reason code, (478, 2) points or None, score, yaw in degrees). With ``skip_mesh`` a frame
        of a face being tracked is not landmarked (reported as "no face", to be interpolated)."""
        if skip_mesh and self.box is not None and self.since_detect < self.detect_every:
            self.since_detect += 1
            return REASONS.index("no face"), None, self.score, 0.0
        if self.box is None or self.since_detect >= self.detect_every:
            self._detect(frame)
        self.since_detect += 1
        if self.box is None:
            return REASONS.index("no face"), None, 0.0, 0.0
        mesh = self.analyzer.landmarks(frame, self.box)
        if mesh is None:
            self.box = None
            return REASONS.index("no face"), None, 0.0, 0.0
        self.box = self.last_box = mesh.box
        problem = face_problem(mesh, min_face_px=MIN_FACE_PX, max_yaw_deg=MAX_YAW_DEG)
        return (REASONS.index(problem) if problem else 0), mesh.points, self.score, mesh.yaw_deg

    def _detect(self, frame: UprightFrame) -> None:
        faces = self.analyzer.detect(frame)
        self.frames_detected += 1
        self.since_detect = 0
        if self.box is not None:
            match = _best_iou(faces, self.box)
            if match is not None:
                self.score = match.score
            self.others = [f.box for f in faces if f is not match]
            return
        if not self.chosen:
            pick = self.choice.pick(faces)
            self.chosen = pick is not None
        else:
            pick = self._reacquire(faces)
        if pick is not None:
            self.analyzer.reset_tracking()
            self.box, self.score = pick.box, pick.score
        self.others = [f.box for f in faces if f is not pick]

    def _reacquire(self, faces: list[Detection]) -> Detection | None:
        fresh = [f for f in faces if all(f.box.iou(o) < MATCH_IOU for o in self.others)]
        if not fresh or self.last_box is None:
            return fresh[0] if fresh else None
        cx, cy = self.last_box.center
        return min(fresh, key=lambda f: (f.box.center[0] - cx) ** 2 + (f.box.center[1] - cy) ** 2)


def _best_iou(faces: list[Detection], box: Box) -> Detection | None:
    best = max(faces, key=lambda f: f.box.iou(box), default=None)
    return best if best is not None and best.box.iou(box) >= MATCH_IOU else None


def compute_face_track(video_path: str | Path, choice: str | FaceChoice = "largest", *, detect_every: int = 10,
                       landmark_every: int = 1, analyzer: FaceAnalyzer | None = None,
                       progress: Progress | None = None) -> FaceTrack:
    """Track the chosen face through ``video_path`` (frames upright). See the module docstring for the rules.

    Args:
        video_path: any video PyAV decodes.
        choice: ``largest`` | ``index=K`` | ``bbox=x,y,w,h`` or a `FaceChoice`.
        detect_every: run the detector every N frames (and on every frame while the face is lost); 1 = always.
        landmark_every: run the mesh on every N-th frame of a tracked face (1..4) and interpolate the others
            (flagged ``interpolated``); 1 (default) landmarks every frame. 2 halves the stage's main cost.
        analyzer: reuse a `FaceAnalyzer` (its mesh tracking is reset); default: a new one, closed at the end.
        progress: called as ``progress(frames_done, estimated_total)`` every 25 frames and at the end.
    Raises:
        `InputError` when the file cannot be opened or decoded at all; `FaceChoiceError` for a bad choice.
    """
    face_choice = FaceChoice.parse(choice)
    if detect_every < 1:
        raise ValueError(f"detect_every must be ≥ 1, got {detect_every}")
    if not 1 <= landmark_every <= MAX_INTERPOLATED_GAP + 1:
        raise ValueError(f"landmark_every must be in 1..{MAX_INTERPOLATED_GAP + 1}, got {landmark_every}")
    own = analyzer is None
    analyzer = analyzer or FaceAnalyzer()
    analyzer.reset_tracking()
    tracker = _Tracker(analyzer, face_choice, detect_every)
    reasons: list[int] = []
    skipped: list[bool] = []
    points: list[np.ndarray] = []
    scores: list[float] = []
    yaws: list[float] = []
    nan_points = np.full((N_POINTS, 2), np.nan, np.float32)
    header = None
    try:
        for header, frame in iter_upright(video_path):
            skip = len(reasons) % landmark_every != 0
            reason, pts, score, yaw = tracker.step(frame, skip_mesh=skip)
            skipped.append(skip and pts is None and score > 0)
            reasons.append(reason)
            points.append(nan_points if pts is None else pts)
            scores.append(score)
            yaws.append(yaw)
            if progress is not None and len(reasons) % 25 == 0:
                progress(len(reasons), max(header.frame_count_estimate, len(reasons)))
    finally:
        if own:
            analyzer.close()
    if progress is not None:
        progress(len(reasons), len(reasons))
    landmarks = np.stack(points) if points else np.zeros((0, N_POINTS, 2), np.float32)
    track = FaceTrack.from_frames(
        reason=np.asarray(reasons, np.uint8), landmarks=landmarks, scores=np.asarray(scores, np.float32),
        yaw=np.asarray(yaws, np.float32), width=header.width if header else 0, height=header.height if header else 0,
        fps=header.fps if header else 0.0, rotation=header.rotation_ccw if header else 0,
        detector=detector_version(), choice=str(face_choice), frames_detected=tracker.frames_detected,
        detect_every=detect_every, landmark_every=landmark_every)
    fill_short_gaps(track, MAX_INTERPOLATED_GAP)
    _hold_skipped_tail(track, np.asarray(skipped, bool))
    return track


def _hold_skipped_tail(track: FaceTrack, skipped: np.ndarray) -> None:
    """Frames after the last landmarked one that were skipped (``landmark_every`` > 1) have no right neighbour to
    interpolate from: they repeat the last usable frame (flagged interpolated)."""
    if not skipped.any() or track.valid.all():
        return
    last = int(np.flatnonzero(track.valid)[-1]) if track.valid.any() else -1
    tail = np.arange(last + 1, track.frame_count)
    if last < 0 or not tail.size or not skipped[tail].all():
        return
    track.landmarks[tail] = track.landmarks[last]
    track.scores[tail], track.yaw[tail] = track.scores[last], track.yaw[last]
    track.reason[tail] = 0
    track.interpolated[tail] = True
    track.refresh()


def fill_short_gaps(track: FaceTrack, max_gap: int = MAX_INTERPOLATED_GAP) -> FaceTrack:
    """Interpolate unusable runs of ≤ ``max_gap`` frames between usable frames with plausible motion between them
    (`_plausible_motion`), in place."""
    valid = track.valid
    n = valid.size
    i = 0
    while i < n:
        if valid[i]:
            i += 1
            continue
        j = i
        while j < n and not valid[j]:
            j += 1
        if 0 < i and j < n and j - i <= max_gap and _plausible_motion(track.boxes[i - 1], track.boxes[j], j - i + 1):
            a, b = i - 1, j
            w = ((np.arange(i, j) - a) / (b - a)).astype(np.float32)
            track.landmarks[i:j] = (1 - w)[:, None, None] * track.landmarks[a] + w[:, None, None] * track.landmarks[b]
            track.scores[i:j] = np.minimum(track.scores[a], track.scores[b])
            track.yaw[i:j] = (1 - w) * track.yaw[a] + w * track.yaw[b]
            track.reason[i:j] = 0
            track.interpolated[i:j] = True
        i = j
    track.refresh()
    return track


def _plausible_motion(a: np.ndarray, b: np.ndarray, steps: int) -> bool:
    """Could one face move from box ``a`` to box ``b`` ((4,) x,y,w,h) in ``steps`` frames? At most one face height
    per frame and a size change within 1.5x — a cut to another place or person fails this."""
    if np.isnan(a).any() or np.isnan(b).any():
        return False
    ha, hb = float(a[3]), float(b[3])
    shift = float(np.hypot(*((a[:2] + a[2:] / 2) - (b[:2] + b[2:] / 2))))
    return max(ha, hb) <= 1.5 * min(ha, hb) and shift <= steps * (ha + hb) / 2


def sample_faces(video_path: str | Path, per_second: float = 3.0, *,
                 analyzer: FaceAnalyzer | None = None) -> list[FaceSample]:
    """Detect faces (no landmarks) on ~``per_second`` evenly spaced frames per second; decoding skips the RGB
    conversion of the others. For the face data contract."""
    if per_second <= 0:
        raise ValueError(f"per_second must be > 0, got {per_second}")
    own = analyzer is None
    analyzer = analyzer or FaceAnalyzer()
    samples: list[FaceSample] = []
    step: list[float] = []

    def keep(index: int) -> bool:
        return not step or index % max(1, round(step[0])) == 0

    try:
        for index, (header, rgb) in enumerate(iter_frames(video_path, keep=keep)):
            if not step:  # first frame: the rate is known now
                step.append(max(1.0, header.fps / per_second))
            if rgb is None:
                continue
            samples.append(FaceSample(index, index / header.fps if header.fps else 0.0, header.width, header.height,
                                      tuple(analyzer.detect(rgb))))
    finally:
        if own:
            analyzer.close()
    return samples
