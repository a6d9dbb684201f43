"""The weight-free AV sync estimator: mouth series, envelope, NCC offset (sign: + = audio late), confidence and
verdict — on arrays with known answers and on real clips whose lips FaceMesh sees part with a speech envelope."""

from __future__ import annotations

import numpy as np
import pytest

from lipline.models.sync.envelope import speech_envelope
from lipline.models.sync.measure import measure_track, measure_video
from lipline.models.sync.mouth import mouth_opening, track_mouth_opening
from lipline.models.sync.offset import (MIN_CONFIDENCE, NO_CLEAR_PEAK, correlation_curve, estimate_offset, null_std)
from tests.models.sync import clips as C

FPS = 25.0


# --- pieces on arrays ----------------------------------------------------------------------------------------

def test_mouth_opening_is_lip_gap_over_eye_distance():
    points = np.zeros((2, 478, 2))
    points[:, 33], points[:, 263] = (100, 100), (160, 100)  # eyes 60 px apart
    for upper, lower in ((82, 87), (13, 14), (312, 317)):
        points[0, upper], points[0, lower] = (130, 200), (130, 212)  # 12 px gap
        points[1, upper], points[1, lower] = (130, 200), (130, 203)
    opening = mouth_opening(points, valid=np.array([True, False]))
    assert opening[0] == pytest.approx(12 / 60) and np.isnan(opening[1])
    assert mouth_opening(points)[1] == pytest.approx(3 / 60)
    with pytest.raises(ValueError, match="478, 2"):
        mouth_opening(np.zeros((2, 68, 2)))


def test_envelope_is_rms_per_frame_interval():
    sr = 16000
    t = np.arange(2 * sr) / sr
    tone = np.where((t >= 0.4) & (t < 0.8), np.sin(2 * np.pi * 440 * t), 0.0)  # frames 10..19 at 25 fps
    env = speech_envelope(np.stack([tone, tone], axis=1), sr, FPS, n_frames=60)
    assert env.shape == (60,) and np.isnan(env[50:]).all()  # 2 s of audio = 50 frames
    assert env[11:19] == pytest.approx(np.full(8, 1 / np.sqrt(2)), rel=0.02)
    assert env[:8].max() < 0.01 and env[22:50].max() < 0.01


def test_correlation_curve_is_pearson_at_each_lag():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(200), rng.standard_normal(200)
    a[[5, 50]] = np.nan
    curve, fewest = correlation_curve(a, b, max_offset=4)
    for lag in (-4, 0, 3):
        x = a[max(0, -lag):200 - max(0, lag)]
        y = b[max(0, lag):200 - max(0, -lag)]
        ok = np.isfinite(x)
        assert curve[lag + 4] == pytest.approx(np.corrcoef(x[ok], y[ok])[0, 1])
    assert fewest == 196 - 2


def test_null_std_of_white_noise_is_one_over_sqrt_n():
    rng = np.random.default_rng(1)
    assert null_std(rng.standard_normal(2500), rng.standard_normal(2500), 2500, 50) == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize("k", [-12, -5, 0, 1, 7, 14])
def test_sign_convention_audio_late_is_positive(k):
    speech = C.make_speech(8.0, seed=3)
    mouth = C.mouth_per_frame(speech)
    late = speech_envelope(C.audio_with_offset(speech, k), C.SR, FPS, mouth.size)  # the sound k frames after
    estimate = estimate_offset(mouth, late, FPS)
    assert estimate.offset_frames == k and estimate.offset_ms == pytest.approx(40.0 * k)
    assert estimate.confidence >= MIN_CONFIDENCE and estimate.verdict == ("pass" if abs(k) <= 1 else "fail")
    assert ("late" in estimate.reason) == (k > 1) and ("early" in estimate.reason) == (k < -1)


def test_frames_without_face_are_skipped_not_filled():
    speech = C.make_speech(8.0, seed=4)
    mouth = C.mouth_per_frame(speech)
    mouth[40:90] = np.nan  # the speaker looks away for 2 s
    envelope = speech_envelope(C.audio_with_offset(speech, 4), C.SR, FPS, mouth.size)
    estimate = estimate_offset(mouth, envelope, FPS)
    assert estimate.offset_frames == 4 and estimate.frames_used <= mouth.size - 50


@pytest.mark.parametrize("case, reason", [
    ("short", "too few frames"), ("silent", "the audio is silent"), ("still", "the mouth does not move")])
def test_no_estimate_without_material(case, reason):
    speech = C.make_speech(6.0, seed=5)
    mouth = C.mouth_per_frame(speech)
    envelope = speech_envelope(C.audio_with_offset(speech, 0), C.SR, FPS, mouth.size)
    if case == "short":
        mouth[30:] = np.nan
    elif case == "silent":
        envelope[:] = 0.0
    else:
        mouth[:] = 0.1
    estimate = estimate_offset(mouth, envelope, FPS)
    assert estimate.verdict == "fail" and reason in estimate.reason and estimate.offset_frames is None


def test_record_fields():
    speech = C.make_speech(6.0, seed=6)
    mouth = C.mouth_per_frame(speech)
    record = estimate_offset(mouth, speech_envelope(C.audio_with_offset(speech, 0), C.SR, FPS, mouth.size),
                             FPS).to_dict(curve=True)
    assert {"offset_frames", "offset_ms", "confidence", "peak_corr", "verdict", "reason", "metric"} <= set(record)
    assert record["verdict"] == "pass" and len(record["curve"]) == 31 and record["curve"][15] == record["peak_corr"]
    assert "weight-free" in record["metric"]


# --- real clips: FaceMesh on a portrait whose lips part with the speech ---------------------------------------

def test_mouth_series_follows_the_rendered_opening(talking, talking_track):
    assert talking_track.valid.all()
    mouth = track_mouth_opening(talking_track)
    assert np.corrcoef(mouth, C.mouth_per_frame(talking.speech))[0, 1] > 0.9


@pytest.mark.parametrize("k", range(-8, 9))
def test_recovers_known_offsets(talking, talking_track, k):
    estimate = measure_track(talking_track, C.audio_with_offset(talking.speech, k), C.SR)
    assert abs(estimate.offset_frames - k) <= 1, estimate
    assert estimate.confidence >= MIN_CONFIDENCE
    assert estimate.verdict == ("pass" if abs(k) <= 1 else "fail"), estimate.reason


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_rejects_unrelated_audio(talking_track, seed):
    estimate = measure_track(talking_track, C.audio_with_offset(C.make_speech(C.SECONDS, seed), 0), C.SR)
    assert estimate.verdict == "fail" and estimate.reason.startswith(NO_CLEAR_PEAK), estimate
    assert estimate.confidence < MIN_CONFIDENCE


def test_measure_video_reads_the_files(talking, talking_track):
    late = measure_video(talking.with_offset(5))  # own face track, own AAC audio
    assert abs(late.offset_frames - 5) <= 1 and late.verdict == "fail" and "late" in late.reason
    in_sync = measure_video(talking.with_offset(0), track=talking_track)  # the given track is reused
    assert abs(in_sync.offset_frames) <= 1 and in_sync.verdict == "pass"
    early = measure_video(talking.silent, audio_path=talking.wav(-6), track=talking_track)
    assert abs(early.offset_frames + 6) <= 1 and "early" in early.reason


def test_measure_video_never_raises(talking, talking_track, tmp_path):
    from lipline.samples import pattern_clip

    no_audio = measure_video(talking.silent, track=talking_track)
    assert no_audio.verdict == "fail" and no_audio.reason.endswith("no audio stream")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 300)
    assert "cannot be opened" in measure_video(junk).reason
    assert measure_video(tmp_path / "missing.mp4").reason.endswith("no such file")
    pattern = pattern_clip(tmp_path / "pattern.mp4", 320, 240, 25, 2.0)
    no_face = measure_video(pattern, audio_path=talking.wav(0))
    assert no_face.verdict == "fail" and "no usable face" in no_face.reason


def test_a_segment_is_measured_from_its_track_slice(talking, talking_track):
    from lipline.models.face.slicing import take

    start = 40  # a segment of frames 40..149 with its own audio (the segment's 16 kHz audio starts at its frame 0)
    segment = take(talking_track, range(start, talking_track.frame_count))
    audio = C.audio_with_offset(talking.speech, 3)[int(start * C.SR / C.FPS):]
    estimate = measure_track(segment, audio, C.SR)
    assert segment.frame_count == 110 and estimate.offset_frames == pytest.approx(3, abs=1)
