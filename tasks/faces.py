"""Faces stage: the speaker's face track of the normalized video, cached in the store, sliced per segment.

The track (per-frame boxes, landmarks, anchors, gap spans) is stored once per reference video under
``_cache/faces/<key>.npz`` in the job's store, keyed by the input video's SHA-256, the detector and its version,
the face choice and the normalized picture (frames, rate, size). One reference dubbed into N languages is tracked
once: the second job reads the track and detects on zero frames.

Each segment gets the slice of the track for its frames, in its order (ping-pong and loop runs included), as a
small file beside the segment, so the GPU side never tracks faces.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from prefect import task
from prefect.cache_policies import NO_CACHE

from lipline.records import Segment
from lipline.store import Store
from lipline.uris import local_path

CACHE_PREFIX = "_cache/faces"
#: The mesh runs on every 2nd frame of the tracked face and the frames between are interpolated: 65 fps instead of
#: 39-46 fps for 1080p30 on 2 cores (bench/face_stage.py), landmarks within 1 px and anchors within 3 px of the
#: every-frame track (tests/models/face/test_track.py). Detection still runs every 10 frames and on every frame
#: while the face is lost, so a cut or a face leaving is caught on the frame it happens.
LANDMARK_EVERY = 2


@dataclass(frozen=True)
class TrackedFaces:
    """Where the job's face track lies, whether it came from the cache, and what it found."""

    path: str
    cache_uri: str
    cache_hit: bool
    summary: dict
    seconds: float
    key: str = ""  # the track's content key (`track_key`)


def track_key(video_sha256: str, detector: str, choice: str, picture: dict) -> str:
    """Content key of a face track (hex SHA-256 of everything the track depends on)."""
    doc = json.dumps({"video": video_sha256, "detector": detector, "choice": choice, "picture": picture},
                     sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def track_faces(video_uri: str, video_sha256: str, picture: dict, choice: str, store: Store, workdir: Path,
                progress: Callable[[float], None] | None = None) -> TrackedFaces:
    """The face track of the normalized video ``video_uri`` (read from the store's cache, else computed and put
    there); ``picture`` describes the normalized frames (frames, fps, width, height) and is part of the key."""
    from lipline.models.face.choice import FaceChoice
    from lipline.models.face.detect import detector_version
    from lipline.models.face.facetrack import FaceTrack
    from lipline.models.face.track import compute_face_track

    started = time.perf_counter()
    choice = str(FaceChoice.parse(choice))
    detector = f"{detector_version()}+landmark_every={LANDMARK_EVERY}"
    content = track_key(video_sha256, detector, choice, picture)
    key = f"{CACHE_PREFIX}/{content}.npz"
    workdir.mkdir(parents=True, exist_ok=True)
    hit = store.exists(key)
    if hit:  # read where it lies (a local store) or as fetched into the workdir (a remote one)
        path = Path(local_path(store.uri(key), workdir))
        track = FaceTrack.load(path)
    else:
        path = workdir / "face-track.npz"

        def on_frames(done: int, total: int) -> None:
            if progress is not None and total:
                progress(min(1.0, done / total))

        track = compute_face_track(local_path(video_uri, workdir), choice, landmark_every=LANDMARK_EVERY,
                                   progress=on_frames)
        track.save(path)
        store.put_file(path, key)
    summary = track.summary()
    summary["frames_detected_this_job"] = 0 if hit else track.frames_detected
    return TrackedFaces(path=str(path), cache_uri=store.uri(key), cache_hit=hit, summary=summary,
                        seconds=round(time.perf_counter() - started, 3), key=content)


def segment_tracks(segments: list[Segment], frame_maps: list[list[int]], track_path: str,
                   out_dir: Path) -> list[Segment]:
    """Each segment with ``face_track_uri`` = the track of its frames (``frame_maps[i]`` = source frame indices)."""
    from lipline.models.face.facetrack import FaceTrack
    from lipline.models.face.slicing import take

    track = FaceTrack.load(track_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for seg, frames in zip(segments, frame_maps, strict=True):
        path = out_dir / f"faces-{seg.index:05d}.npz"
        take(track, frames).save(path)
        out.append(seg.model_copy(update={"face_track_uri": str(path)}))
    return out


@task(name="track-faces", cache_policy=NO_CACHE,
      description="The speaker's face in every frame of the normalized video (cached per reference video)")
def track_faces_task(video_uri: str, video_sha256: str, picture: dict, choice: str, store: Store,
                     workdir: Path, progress: Callable[[float], None] | None = None) -> TrackedFaces:
    return track_faces(video_uri, video_sha256, picture, choice, store, workdir, progress)


__all__ = ["TrackedFaces", "segment_tracks", "track_faces", "track_faces_task", "track_key"]
