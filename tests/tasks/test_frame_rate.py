"""Exact frame rates: every stage keeps the source's rational rate (30/1 stays 30/1, 30000/1001 stays 30000/1001).

The end-to-end check through the whole flow is `tests/flows/test_frame_rates.py`; here the pieces that turn a rate
into a number: probe's snapping, normalize's CFR conversion and merge's stream statistics.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import pytest

from lipline.tasks.merge import video_stream_stats
from lipline.tasks.normalize import fps_fraction, normalize_video
from lipline.tasks.probe import exact_frame_rate, probe_media
from tests import media_factory as mf

RATES = ["24000/1001", "24", "25", "30000/1001", "30", "50", "60000/1001", "60"]


def test_snapping_picks_the_closest_rate_not_the_first_near_one():
    # 30 and 30000/1001 differ by 0.1 %: the old 0.5 % window took the first standard rate in the list (29.97)
    assert exact_frame_rate(Fraction(30)) == 30
    assert exact_frame_rate(Fraction(60), (Fraction(60),)) == 60
    assert exact_frame_rate(Fraction(24)) == 24
    assert exact_frame_rate(Fraction(30000, 1001)) == Fraction(30000, 1001)
    # 1 ms timestamps: a 29.97 fps mean measured as 59 frames over 1969 ms, within the timestamps' precision
    assert exact_frame_rate(Fraction(59, 1969) * 1000, tolerance=1.5e-3 / 1.969) == Fraction(30000, 1001)
    # 24 frames over 400 ms of 1 ms timestamps fit 60 and 60000/1001 alike: the declared rate decides, and a
    # declared estimate (19001/317, what an MKV declares) is the standard rate it approximates
    window = 1.5e-3 / 0.4
    assert exact_frame_rate(Fraction(60), (Fraction(60000, 1001),), tolerance=window) == Fraction(60000, 1001)
    assert exact_frame_rate(Fraction(60), (Fraction(19001, 317),), tolerance=window) == Fraction(60000, 1001)
    # a declared rate when no standard one fits; an unknown rate stays itself
    assert exact_frame_rate(Fraction(125, 10), (Fraction(25, 2),)) == Fraction(25, 2)
    assert exact_frame_rate(Fraction(1733, 100)) == Fraction(1733, 100)
    assert exact_frame_rate(None, (Fraction(25),)) == 25 and exact_frame_rate(None) is None


@pytest.mark.parametrize("value,expected", [(30.0, Fraction(30)), (60.0, Fraction(60)), (24.0, Fraction(24)),
                                            (29.97, Fraction(30000, 1001)), (59.94, Fraction(60000, 1001)),
                                            (23.976, Fraction(24000, 1001)), (25.0, Fraction(25))])
def test_float_rates_of_old_records_map_to_the_right_fraction(value, expected):
    assert fps_fraction(value, value) == expected


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """2 s test patterns at every common rate, as MP4 (fine time base) and MKV (1 ms timestamps)."""
    d = tmp_path_factory.mktemp("rates")
    out = {}
    for rate in RATES:
        for ext in ("mp4", "mkv"):
            out[rate, ext] = mf.pattern_clip(d / f"r{rate.replace('/', '_')}.{ext}", 128, 72, fps=rate, dur=2.0)
    return out


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
@pytest.mark.parametrize("rate", RATES)
def test_probe_reports_the_exact_rate(sources, rate, ext):
    video = probe_media(str(sources[rate, ext])).video
    assert video.rate == f"{Fraction(rate).numerator}/{Fraction(rate).denominator}"
    assert video.frame_rate == Fraction(rate) and video.fps == float(Fraction(rate)) and video.constant_fps


@pytest.mark.parametrize("rate", RATES)
def test_cfr_conversion_and_stream_stats_keep_the_exact_rate(sources, rate, tmp_path):
    """A re-encoded intermediate (1 ms MKV source, odd width forces the encode) at exactly the source rate."""
    src = tmp_path / "odd.mkv"
    mf.ffmpeg("-i", sources[rate, "mkv"], "-vf", "crop=127:72:0:0", "-c:v", "libx264", "-preset", "ultrafast",
              "-pix_fmt", "yuv444p", src)
    out = normalize_video(str(src), tmp_path / "n")
    assert out.reencoded and Fraction(out.fps_num, out.fps_den) == Fraction(rate)
    with av.open(out.uri) as c:
        stream = c.streams.video[0]
        assert stream.average_rate == Fraction(rate) and stream.guessed_rate == Fraction(rate)
    stats = video_stream_stats(Path(out.uri))
    assert stats.fps == Fraction(rate) and stats.frames == out.frame_count == round(2 * Fraction(rate))


def test_short_coarse_timestamps_keep_the_declared_rate(tmp_path):
    """0.4 s of 59.94 fps in MKV (1 ms ticks): the packets span exactly 400 ms, which alone would read as 60."""
    mkv = mf.pattern_clip(tmp_path / "short.mkv", 128, 72, fps="60000/1001", dur=0.4)
    assert video_stream_stats(mkv).fps == Fraction(60000, 1001)
    assert probe_media(str(mkv)).video.rate == "60000/1001"
