"""`lipline.frames.FrameReader`: frames by index at a constant rate, from a CFR or a variable-rate file."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from lipline.frames import FrameReader
from tests import media_factory as mf

RATE = Fraction(25)
# Source frame n (luma 8 * n) at slot t * 25: 0..9 in step, 10..14 every third slot (a gap, as a phone or a screen
# recording writes), 15 in slot 22 with 14 (two frames in one slot), then 16..19 in step again.
SLOTS = "if(lt(N,10),N,if(lt(N,15),10+3*(N-10),if(eq(N,15),22.4,23+(N-16))))"
# What index i shows: the last frame due at i or before (ffmpeg's fps filter), e.g. 10 is held over slots 10..12
EXPECTED = [*range(10), 10, 10, 10, 11, 11, 11, 12, 12, 12, 13, 13, 13, 15, 16, 17, 18, 19]


@pytest.fixture(scope="module")
def vfr_counter(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("frames") / "vfr.mp4"
    mf.ffmpeg("-f", "lavfi", "-i", "color=c=black:size=64x48:rate=25:duration=0.8", "-vf",
              f"geq=lum='N*8':cb=128:cr=128,setpts='{SLOTS}/25/TB'", "-fps_mode", "passthrough",
              "-video_track_timescale", "1000", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-g", "4",
              "-pix_fmt", "yuv420p", path)
    return path


def _numbers(frames) -> list[int]:
    return [int(round(f.to_ndarray()[: f.height].mean() / 8)) for f in frames]


def test_a_variable_rate_file_is_read_as_the_fps_filter_resamples_it(vfr_counter, tmp_path):
    reader = FrameReader(vfr_counter, RATE, len(EXPECTED))
    try:
        assert _numbers(reader.frames(0, len(EXPECTED))) == EXPECTED
    finally:
        reader.close()
    # the same resampling as ffmpeg's own fps filter (what the conforming encode used to write)
    raw = tmp_path / "fps.yuv"
    mf.ffmpeg("-i", vfr_counter, "-vf", "fps=25", "-f", "rawvideo", "-pix_fmt", "yuv420p", raw)
    lumas = np.fromfile(raw, dtype=np.uint8).reshape(-1, 48 * 64 * 3 // 2)[:, : 48 * 64].mean(axis=1)  # Y planes
    assert [int(round(v / 8)) for v in lumas][: len(EXPECTED)] == EXPECTED


def test_seeks_and_the_frame_shown_again(vfr_counter):
    reader = FrameReader(vfr_counter, RATE, len(EXPECTED))
    try:
        assert _numbers(reader.frames(20, 24)) == EXPECTED[20:24]  # a jump past max_skip would seek; this decodes on
        assert _numbers(reader.frames(23, 25)) == EXPECTED[23:25]  # the frame shown last, once more: no seek
        assert _numbers(reader.frames(5, 14)) == EXPECTED[5:14]  # backwards: seeks to the keyframe before
        assert _numbers(reader.frames(25, 30)) == [18, 19, 19, 19, 19]  # past the end: the last frame held
    finally:
        reader.close()


def test_a_cfr_file_is_read_frame_for_frame(tmp_path):
    path = tmp_path / "cfr.mp4"
    mf.ffmpeg("-f", "lavfi", "-i", "color=c=black:size=64x48:rate=25:duration=1.2", "-vf", "geq=lum='N*8':cb=128:cr=128",
              "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-g", "5", "-pix_fmt", "yuv420p", path)
    reader = FrameReader(path, RATE, 30)
    try:
        assert _numbers(reader.frames(0, 30)) == list(range(30))
        assert _numbers(reader.frames(12, 17)) == list(range(12, 17))
    finally:
        reader.close()
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 30
