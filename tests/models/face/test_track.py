"""The tracked face through synthetic clips: choice held, gaps, rotation, detect-every-N accuracy, file format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lipline.errors import FaceChoiceError, InputError
from lipline.models.face.anchors import anchors_from_mesh
from lipline.models.face.choice import FaceChoice
from lipline.models.face.detect import FaceAnalyzer
from lipline.models.face.facetrack import FaceTrack
from lipline.models.face.track import compute_face_track, fill_short_gaps, sample_faces
from lipline.models.face.video import iter_frames
from tests.models.face import clips as C


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("face-clips")
    for name, seconds, at in (("moving", 3, C.moving), ("leaving", 4, C.leaving), ("two", 3, C.two_faces),
                              ("enters", 3, C.second_enters), ("crossing", 3, C.crossing)):
        C.write_clip(d / f"{name}.mp4", C.timeline(seconds, at))
    blink = C.timeline(2, C.still("astronaut"))
    for i in (30, 31):  # two frames without the face: interpolated, not a span
        blink[i] = []
    C.write_clip(d / "blink.mp4", blink)
    C.write_clip(d / "tiny.mp4", C.timeline(1, lambda t: [C.Sprite("astronaut", 240, 160, 36)]))
    for name in ("cat", "coffee"):
        C.write_clip(d / f"{name}.mp4", [C.negative(name)] * 25)
    C.phone_clip(d)
    return d


@pytest.fixture(scope="session")
def analyzer():
    with FaceAnalyzer() as a:
        yield a


@pytest.fixture(scope="session")
def moving_tracks(clip_dir, analyzer) -> dict[int, FaceTrack]:
    return {n: compute_face_track(clip_dir / "moving.mp4", detect_every=n, analyzer=analyzer) for n in (1, 10)}


@pytest.fixture(scope="session")
def leaving_track(clip_dir, analyzer) -> FaceTrack:
    return compute_face_track(clip_dir / "leaving.mp4", analyzer=analyzer)


def _centres_x(track: FaceTrack) -> np.ndarray:
    return track.boxes[:, 0] + track.boxes[:, 2] / 2


def test_moving_scaled_turned_face_is_tracked_on_every_frame(moving_tracks):
    track = moving_tracks[10]
    assert track.frame_count == 75 and track.valid.all() and not track.spans
    assert track.frames_detected <= 8
    assert track.landmarks.shape == (75, 478, 2) and track.landmarks.dtype == np.float32
    assert track.anchors.shape == (75, 3, 2) and track.anchors.dtype == np.float64
    expected = np.array([C.moving(i / C.FPS)[0].cx for i in range(75)])
    assert np.abs(_centres_x(track) - expected).max() < 10
    assert (track.width, track.height, track.fps, track.choice) == (C.W, C.H, 25.0, "largest")


def test_detect_every_10_is_as_accurate_as_every_frame(moving_tracks, clip_dir, analyzer):
    """Bounds (faces 70–110 px): against detect-every-frame, and against an untracked reference (detector +
    a fresh mesh on every frame): mean landmark difference < 1 px, anchors at most 3 px apart."""
    every, sparse = moving_tracks[1], moving_tracks[10]
    assert every.frames_detected == 75 and sparse.frames_detected <= 8
    assert np.abs(every.landmarks - sparse.landmarks).mean() < 1.0
    assert np.abs(every.anchors - sparse.anchors).max() <= 2.0
    fresh = []
    for _, rgb in iter_frames(clip_dir / "moving.mp4"):
        faces = analyzer.detect(rgb)
        analyzer.reset_tracking()
        mesh = analyzer.landmarks(rgb, faces[0].box) if faces else None
        fresh.append(mesh.points if mesh else np.full((478, 2), np.nan, np.float32))
    fresh = np.stack(fresh)
    assert np.isfinite(fresh[:, 0, 0]).sum() >= 70
    assert np.nanmean(np.abs(fresh - sparse.landmarks)) < 1.0
    assert np.nanmax(np.abs(anchors_from_mesh(fresh) - sparse.anchors)) <= 3.0


def test_landmarks_every_second_frame_stay_close(moving_tracks, clip_dir, analyzer):
    """landmark_every=2 (the mesh on every other frame, the rest interpolated): mean landmark difference to the
    every-frame track < 1 px, anchors within 3 px; a skipped last frame repeats the previous one."""
    full = moving_tracks[10]
    half = compute_face_track(clip_dir / "moving.mp4", landmark_every=2, analyzer=analyzer)
    assert half.valid.all() and half.interpolated.sum() == 37 and half.summary()["landmark_every"] == 2
    assert np.abs(half.landmarks - full.landmarks).mean() < 1.0
    assert np.abs(half.anchors - full.anchors).max() <= 3.0
    blink = compute_face_track(clip_dir / "blink.mp4", landmark_every=2, analyzer=analyzer)  # 50 frames: 49 skipped
    assert blink.valid.all() and blink.interpolated[49] and np.array_equal(blink.landmarks[49], blink.landmarks[48])
    with pytest.raises(ValueError, match="landmark_every"):
        compute_face_track(clip_dir / "blink.mp4", landmark_every=5, analyzer=analyzer)


def test_face_leaving_for_two_seconds_is_a_no_face_span(leaving_track):
    track = leaving_track
    (span,) = track.spans
    assert span.reason == "no face"
    away = int(C.LEAVE_START_S * C.FPS), int(C.LEAVE_END_S * C.FPS)
    assert away[0] - 5 <= span.start <= away[0] and away[1] <= span.end <= away[1] + 5
    assert not track.valid[span.start:span.end].any() and track.valid[:span.start].all()
    assert track.valid[span.end:].all()
    assert np.isnan(track.anchors[span.start:span.end]).all()
    assert track.summary()["spans"] == [span.to_dict(25.0)]


def test_two_frame_dropout_is_interpolated(clip_dir, analyzer):
    track = compute_face_track(clip_dir / "blink.mp4", analyzer=analyzer)
    assert track.valid.all() and not track.spans
    assert np.flatnonzero(track.interpolated).tolist() == [30, 31]
    np.testing.assert_allclose(track.anchors[30], track.anchors[29], atol=2)


def test_largest_is_chosen_at_the_first_frame_and_kept_when_it_shrinks_below_the_other(clip_dir, analyzer):
    track = compute_face_track(clip_dir / "two.mp4", "largest", analyzer=analyzer)
    assert track.valid.all()
    assert np.abs(_centres_x(track) - 130).max() < 10  # the astronaut throughout
    assert track.boxes[-1, 3] < 0.75 * 90  # …although Grace (90 px) is larger at the end


@pytest.mark.parametrize("choice", ["index=1", "bbox=320,130,60,60"])
def test_index_and_bbox_choose_the_right_face(clip_dir, analyzer, choice):
    track = compute_face_track(clip_dir / "two.mp4", choice, analyzer=analyzer)
    assert track.valid.all() and np.abs(_centres_x(track) - 350).max() < 10
    assert track.choice == choice


def test_second_face_entering_and_growing_does_not_steal_the_track(clip_dir, analyzer):
    track = compute_face_track(clip_dir / "enters.mp4", analyzer=analyzer)
    assert track.valid.all() and np.abs(_centres_x(track) - 130).max() < 10


def test_crossing_faces_keep_their_identity(clip_dir, analyzer):
    """Grace walks in front of the astronaut: the astronaut's track pauses (no face) and resumes on her."""
    track = compute_face_track(clip_dir / "crossing.mp4", analyzer=analyzer)
    astronaut_x = np.array([C.crossing(i / C.FPS)[0].cx for i in range(75)])
    ok = track.valid
    assert ok.sum() >= 50 and ok[-10:].all()
    assert np.abs(_centres_x(track)[ok] - astronaut_x[ok]).max() < 12
    assert all(s.reason == "no face" for s in track.spans)


def test_too_small_face_is_a_span(clip_dir, analyzer):
    track = compute_face_track(clip_dir / "tiny.mp4", analyzer=analyzer)
    assert not track.valid.any()
    assert [(s.start, s.end, s.reason) for s in track.spans] == [(0, 25, "too small")]  # 36-px face


@pytest.mark.parametrize("name", ["cat", "coffee"])
def test_negatives_have_no_face(clip_dir, analyzer, name):
    track = compute_face_track(clip_dir / f"{name}.mp4", analyzer=analyzer)
    assert not track.valid.any() and [(s.start, s.end, s.reason) for s in track.spans] == [(0, 25, "no face")]
    assert track.frames_detected == 25


def test_phone_clip_is_tracked_upright(clip_dir, analyzer):
    rotated, reference = clip_dir / "phone-rotated.mp4", clip_dir / "phone-upright.mp4"
    (header, frame), = [next(iter_frames(rotated))]
    (_, ref_frame), = [next(iter_frames(reference))]
    assert (header.width, header.height, header.rotation_ccw) == (240, 320, 90)
    assert frame.shape == ref_frame.shape and np.abs(frame.astype(int) - ref_frame).mean() < 3
    track = compute_face_track(rotated, analyzer=analyzer)
    upright = compute_face_track(reference, analyzer=analyzer)
    assert track.valid.all() and (track.width, track.height, track.rotation) == (240, 320, 90)
    assert np.abs(track.anchors - upright.anchors).max() <= 2
    left, right, nose = track.anchors[0]
    assert left[0] < right[0] and nose[1] > max(left[1], right[1])  # eyebrows above the nose: upright


def test_save_load_round_trip(moving_tracks, leaving_track, tmp_path):
    for track in (moving_tracks[10], leaving_track):
        path = tmp_path / "track.facetrack"
        track.save(path)
        back = FaceTrack.load(path)
        assert back.summary() == track.summary()
        np.testing.assert_array_equal(back.reason, track.reason)
        np.testing.assert_array_equal(back.interpolated, track.interpolated)
        np.testing.assert_array_equal(back.anchors, track.anchors)
        err = np.abs(back.landmarks - track.landmarks)
        assert np.nanmax(err) <= 2.5e-4 * np.nanmax(track.boxes[:, 3]) + 1e-3
        assert np.array_equal(np.isnan(back.landmarks), np.isnan(track.landmarks))
        assert path.stat().st_size < 2600 * track.frame_count


def test_fill_short_gaps_interpolates_up_to_three_frames_only():
    n = 20
    landmarks = np.repeat(np.linspace(0, 19, n, dtype=np.float32)[:, None, None], 478, axis=1)
    landmarks = np.repeat(landmarks, 2, axis=2) + np.arange(478, dtype=np.float32)[None, :, None]
    reason = np.zeros(n, np.uint8)
    reason[3:6] = 1  # 3 frames: filled
    reason[10:14] = 3  # 4 frames "too turned": a span
    reason[18:] = 1  # at the end: no right neighbour, a span
    lm = landmarks.copy()
    lm[reason == 1] = np.nan
    track = FaceTrack.from_frames(reason=reason, landmarks=lm, scores=np.ones(n, np.float32),
                                  yaw=np.zeros(n, np.float32), width=64, height=64, fps=25.0, rotation=0,
                                  detector="test", choice="largest", frames_detected=n, detect_every=1)
    fill_short_gaps(track)
    assert np.flatnonzero(track.interpolated).tolist() == [3, 4, 5]
    np.testing.assert_allclose(track.landmarks[3:6], landmarks[3:6], atol=1e-4)
    assert [(s.start, s.end, s.reason) for s in track.spans] == [(10, 14, "too turned"), (18, 20, "no face")]

    jump = landmarks.copy()
    jump[8:] += 5000.0  # the face is elsewhere after the dropout (a cut): no interpolation across it
    reason = np.zeros(n, np.uint8)
    reason[6:8] = 1
    jump[6:8] = np.nan
    track = FaceTrack.from_frames(reason=reason, landmarks=jump, scores=np.ones(n, np.float32),
                                  yaw=np.zeros(n, np.float32), width=64, height=64, fps=25.0, rotation=0,
                                  detector="test", choice="largest", frames_detected=n, detect_every=1)
    fill_short_gaps(track)
    assert not track.interpolated.any() and [(s.start, s.end) for s in track.spans] == [(6, 8)]


def test_sample_faces_counts_faces_per_sample(clip_dir, analyzer):
    samples = sample_faces(clip_dir / "two.mp4", per_second=3, analyzer=analyzer)
    assert 8 <= len(samples) <= 10 and all(len(s.faces) == 2 for s in samples)
    assert samples[0].frame_index == 0 and samples[1].time_s == pytest.approx(8 / 25)
    assert all(len(s.faces) == 0 for s in sample_faces(clip_dir / "cat.mp4", analyzer=analyzer))


def test_bad_choice_and_bad_file_raise_lipline_errors(clip_dir, tmp_path):
    for bad in ("biggest", "index=-1", "index=a", "bbox=1,2,3", "bbox=1,2,0,4"):
        with pytest.raises(FaceChoiceError, match="largest \\| index=K"):
            FaceChoice.parse(bad)
    assert str(FaceChoice.parse(" bbox=1, 2.5,3,4 ")) == "bbox=1,2.5,3,4"
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(InputError, match="junk.mp4"):
        compute_face_track(junk)
