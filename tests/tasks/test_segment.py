"""Stage 4, segment: the plan as pure data (cuts in pauses, sizes, length modes) and real cuts whose frames carry
their source index as a gray level, so the frame map can be read back exactly."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

import lipline.frames as frames
from lipline.errors import InputError
from lipline.tasks.segment import LengthModes, cut_segments, plan_from_samples, plan_segments
from tests import media_factory as mf

WEIRD = "we ird 'q' \"dq\" $HOME ;ls -x 名前 🎬"
SR = 16000


def tone(seconds: float, pauses: tuple[tuple[float, float], ...] = ()) -> np.ndarray:
    return mf.speech_like(seconds, sr=SR, channels=1, pauses=pauses)[:, 0]


# ------------------------------------------------------------------------------------------- plan (pure data)


def test_cuts_fall_inside_pauses():
    pauses = ((1.3, 1.9), (2.6, 2.8), (3.4, 4.2), (5.0, 5.3))
    plan = plan_from_samples(tone(6.0, pauses), video_frames=150, fps=25.0, max_segment_s=2.5)
    assert plan.length_mode == "equal" and plan.total_frames == 150
    assert sum(s.frame_count for s in plan.segments) == plan.total_frames
    assert all(s.frame_count <= 2.5 * 25 for s in plan.segments)
    assert [s.start_frame for s in plan.segments[1:]] == [s.end_frame for s in plan.segments[:-1]]
    cuts = [s.start_frame / 25 for s in plan.segments[1:]]
    assert cuts, "6 s with a 2.5 s maximum needs cuts"
    for cut in cuts:
        assert any(a <= cut <= b for a, b in pauses), (cut, pauses)
    assert abs(cuts[0] - 1.6) <= 0.1  # the middle of the longest pause of the first window
    for s in plan.segments:  # audio slices span exactly their frames (640 samples per frame at 25 fps)
        assert s.audio_end - s.audio_start == s.frame_count * 640
    assert plan.segments[-1].audio_end == plan.total_samples == 150 * 640


def test_hard_cut_without_pauses():
    plan = plan_from_samples(tone(5.0), video_frames=125, fps=25.0, max_segment_s=2.0)
    assert [s.frame_count for s in plan.segments] == [50, 50, 25]


def test_ntsc_rate_sample_alignment():
    plan = plan_from_samples(tone(5.0), video_frames=150, fps=30000 / 1001, max_segment_s=1.5)
    assert (plan.fps_num, plan.fps_den) == (30000, 1001)
    assert all(s.frame_count <= 45 for s in plan.segments)
    for s in plan.segments:
        assert s.audio_start == round(s.start_frame * 16000 * 1001 / 30000)
        assert s.audio_end == round(s.end_frame * 16000 * 1001 / 30000)


def test_max_segment_validated():
    with pytest.raises(ValueError, match="30"):
        plan_from_samples(tone(1.0), 25, 25.0, max_segment_s=31)
    with pytest.raises(ValueError):
        LengthModes(audio_longer="bounce")


@pytest.mark.parametrize("mode, expected", [
    ("pingpong", [0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2]),
    ("loop", [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2]),
    ("freeze", [0, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3]),
])
def test_audio_longer_frame_maps(mode, expected):
    audio = tone(11 / 25)  # 11 frames of dub for a 4-frame video
    plan = plan_from_samples(audio, video_frames=4, fps=25.0, max_segment_s=0.2, length_mode=mode)
    assert plan.length_mode == mode and plan.total_frames == 11
    assert plan.frame_map() == expected
    per_segment = [r.source(i) for s in plan.segments for r in s.runs for i in range(r.out_start, r.out_end)]
    assert per_segment == expected
    assert all(s.frame_count <= 5 for s in plan.segments)


def test_fail_mode_names_both_durations():
    with pytest.raises(InputError) as err:
        plan_from_samples(tone(6.0), video_frames=100, fps=25.0, length_mode="fail", audio_name="dub.wav")
    text = str(err.value)
    assert "6.00 s" in text and "4.00 s" in text and "dub.wav" in text


def test_video_longer_trim_and_pad_silence():
    trim = plan_from_samples(tone(3.0), video_frames=100, fps=25.0)
    assert (trim.length_mode, trim.total_frames, trim.frame_map()) == ("trim", 75, list(range(75)))
    pad = plan_from_samples(tone(3.0), video_frames=100, fps=25.0, length_mode=LengthModes(video_longer="pad-silence"))
    assert (pad.length_mode, pad.total_frames) == ("pad-silence", 100)
    assert pad.audio_pad_s == pytest.approx(1.0) and pad.total_samples == 100 * 640
    assert LengthModes.of("pad-silence").video_longer == "pad-silence"
    assert LengthModes.of("loop,pad-silence") == LengthModes(audio_longer="loop", video_longer="pad-silence")


def test_within_half_a_frame_is_equal():
    plan = plan_from_samples(np.ones(50 * 640 + 200, np.float32) * 0.1, video_frames=50, fps=25.0,
                             length_mode="fail")
    assert (plan.length_mode, plan.total_frames, plan.is_identity) == ("equal", 50, True)


@pytest.mark.parametrize(("audio_s", "audio_longer", "video_longer", "forward", "frame_map"), [
    (2.0, "pingpong", "trim", True, list(range(50))),             # equal
    (1.5, "pingpong", "trim", True, list(range(38))),             # video longer, trimmed to the dub's 37.5 frames
    (1.5, "pingpong", "pad-silence", True, list(range(50))),      # video kept, the dub padded
    (3.0, "pingpong", "trim", False, [*range(50), *range(49, 24, -1)]),  # forward, then back from the last frame
    (3.0, "freeze", "trim", False, [*range(50), *[49] * 25]),     # the last frame held
    (3.0, "loop", "trim", False, [*range(50), *range(25)]),        # from the start again
])
def test_is_forward_only_when_no_frame_is_synthesized(audio_s, audio_longer, video_longer, forward, frame_map):
    samples = np.ones(int(audio_s * 16000), np.float32) * 0.1
    plan = plan_from_samples(samples, video_frames=50, fps=25.0,
                             length_mode=LengthModes(audio_longer=audio_longer, video_longer=video_longer))
    assert plan.is_forward is forward
    assert plan.frame_map() == frame_map and plan.total_frames == len(frame_map)


# ------------------------------------------------------------------------------------------------ real cuts


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory) -> Path:
    """50 frames at 25 fps whose luma is 4 * frame index; B-frames and a short GOP so seeks are exercised."""
    path = tmp_path_factory.mktemp("seg") / f"-{WEIRD}.mp4"
    mf.ffmpeg("-f", "lavfi", "-i", "color=c=black:size=64x48:rate=25:duration=2", "-vf",
              "geq=lum='N*4':cb=128:cr=128", "-c:v", "libx264", "-preset", "veryfast", "-qp", "0", "-g", "12",
              "-pix_fmt", "yuv420p", path)
    return path


def frame_indices(path: str | Path) -> list[int]:
    with av.open(str(path)) as c:
        return [int(round(f.to_ndarray()[: f.height].mean() / 4)) for f in c.decode(video=0)]


@pytest.mark.parametrize("mode", ["pingpong", "loop", "freeze"])
def test_cut_streams_exact_frames(counter_video, tmp_path, monkeypatch, mode):
    monkeypatch.setattr(frames, "REVERSE_BUDGET_BYTES", 64 * 48 * 3 // 2 * 8)  # reverse in chunks of 8 frames
    wav = tmp_path / f"{WEIRD}.wav"
    sf.write(wav, tone(4.6, pauses=((1.0, 1.4), (2.9, 3.3))), SR, subtype="PCM_16")
    plan = plan_segments(wav, video_frames=50, fps=25.0, max_segment_s=2.0, length_mode=mode)
    assert plan.total_frames == 115 and len(plan.segments) >= 3
    segs = cut_segments(plan, str(counter_video), str(wav), tmp_path / f"out {WEIRD}")
    got = [i for s in segs for i in frame_indices(s.video_uri)]
    assert got == plan.frame_map()
    for s, planned in zip(segs, plan.segments):
        assert (s.start_frame, s.end_frame) == (planned.start_frame, planned.end_frame)
        info = sf.info(s.audio_uri)
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, s.frame_count * 640)
    assert sum(s.frame_count for s in segs) == plan.total_frames


def test_identity_reuses_the_video(counter_video, tmp_path):
    wav = tmp_path / "dub.wav"
    sf.write(wav, tone(2.0), SR, subtype="PCM_16")
    plan = plan_segments(wav, video_frames=50, fps=25.0)
    assert plan.is_identity
    (seg,) = cut_segments(plan, str(counter_video), str(wav), tmp_path / "o")
    assert seg.video_uri == str(counter_video) and seg.frame_count == 50 and seg.frame_range == (0, 50)
    assert sf.info(seg.audio_uri).frames == 50 * 640


def test_trim_and_pad_silence_cut(counter_video, tmp_path):
    wav = tmp_path / "short.wav"
    sf.write(wav, tone(1.2), SR, subtype="PCM_16")
    trim = plan_segments(wav, 50, 25.0, length_mode="trim")
    (seg,) = cut_segments(trim, str(counter_video), str(wav), tmp_path / "t")
    assert (seg.video_uri, seg.frame_range) == (str(counter_video), (0, 30))  # a range of the video, no file
    assert frame_indices(seg.video_uri)[slice(*seg.frame_range)] == list(range(30))
    assert not list((tmp_path / "t").glob("*.mp4"))
    pad = plan_segments(wav, 50, 25.0, length_mode="pad-silence")
    (seg,) = cut_segments(pad, str(counter_video), str(wav), tmp_path / "p")
    assert seg.video_uri == str(counter_video)
    audio, _ = sf.read(seg.audio_uri)
    assert audio.shape == (50 * 640,) and not audio[int(1.2 * SR):].any()


def test_no_segment_videos_when_the_engine_keeps_frames(counter_video, tmp_path):
    """write_video=False (passthrough): a ping-pong plan encodes nothing here; every segment names the source and
    still gets its exact audio slice (the final encode reads the frames in the plan's order)."""
    wav = tmp_path / "dub.wav"
    sf.write(wav, tone(3.0, pauses=((1.0, 1.4),)), SR, subtype="PCM_16")
    plan = plan_segments(wav, video_frames=50, fps=25.0, max_segment_s=2.0, length_mode="pingpong")
    assert not plan.is_forward
    segs = cut_segments(plan, str(counter_video), str(wav), tmp_path / "out", write_video=False)
    assert not list((tmp_path / "out").glob("*.mp4"))
    assert {s.video_uri for s in segs} == {str(counter_video)} and all(s.frame_range is None for s in segs)
    assert [(s.start_frame, s.end_frame) for s in segs] == [(p.start_frame, p.end_frame) for p in plan.segments]
    assert [sf.info(s.audio_uri).frames for s in segs] == [s.frame_count * 640 for s in segs]
