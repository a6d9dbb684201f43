"""Faces stage: the face track is computed once per reference video and read from the store's cache after that;
each segment gets the track of its own frames, in its order."""

from __future__ import annotations

import numpy as np
import pytest

from lipline.models.face.facetrack import FaceTrack
from lipline.records import Segment
from lipline.store import Store
from lipline.tasks.faces import segment_tracks, track_faces
from lipline.uris import sha256_file
from tests.models.face import clips


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("faces-stage")
    video = clips.write_clip(d / "ref.mp4", clips.timeline(1.0, clips.moving))
    return video, sha256_file(video), {"frames": 25, "fps": "25/1", "width": clips.W, "height": clips.H}


def test_second_job_reads_the_track_and_detects_nothing(reference, tmp_path):
    video, sha, picture = reference
    store = Store(str(tmp_path / "store"))
    first = track_faces(str(video), sha, picture, "largest", store, tmp_path / "job1")
    again = track_faces(str(video), sha, picture, "largest", store, tmp_path / "job2")
    assert (first.cache_hit, again.cache_hit) == (False, True)
    assert first.summary["frames_detected_this_job"] > 0 and again.summary["frames_detected_this_job"] == 0
    assert first.cache_uri == again.cache_uri and len(list((tmp_path / "store" / "_cache" / "faces").iterdir())) == 1
    a, b = FaceTrack.load(first.path), FaceTrack.load(again.path)
    assert np.array_equal(a.anchors, b.anchors) and a.valid.all()
    other = track_faces(str(video), sha, picture, "index=0", store, tmp_path / "job3")  # another choice: its own key
    assert other.cache_hit is False and other.cache_uri != first.cache_uri


def test_segments_get_the_track_of_their_frames(reference, tmp_path):
    video, sha, picture = reference
    tracked = track_faces(str(video), sha, picture, "largest", Store(str(tmp_path / "s")), tmp_path / "w")
    segs = [Segment(index=0, start_frame=0, end_frame=25, fps=25.0, video_uri="v", audio_uri="a0"),
            Segment(index=1, start_frame=25, end_frame=35, fps=25.0, video_uri="v", audio_uri="a1")]
    maps = [list(range(25)), list(range(24, 14, -1))]  # a ping-pong run back from the last frame
    out = segment_tracks(segs, maps, tracked.path, tmp_path / "segs")
    whole = FaceTrack.load(tracked.path)
    back = FaceTrack.load(out[1].face_track_uri)
    assert back.frame_count == 10 and np.array_equal(back.anchors, whole.anchors[24:14:-1])
    assert FaceTrack.load(out[0].face_track_uri).frame_count == 25
