"""Merge: stream-copy concat of segments, frame-accurate, for any file name."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from lipline.errors import MediaToolError
from lipline.tasks.merge import concat_quote, merge, merge_segments, video_stream_stats
from lipline.tasks.probe import probe_media
from tests import media_factory as mf

# (first frame, frame count): odd counts, so a one-frame drift at a join would show
CUTS = ((0, 25), (25, 31), (56, 19))
ODD_NAMES = ("-dash seg 1.mp4", "it's $HOME; seg.mp4", "分段 🎬 [2],x=y:z.mp4")


def decoded_frames(path: Path) -> int:
    return probe_media(str(path)).video.frame_count


def cut(src: Path, dest: Path, start: int, count: int) -> Path:
    """One segment as the engine would write it: same encoder settings for all, with an AAC track."""
    mf.ffmpeg("-i", src, "-vf", f"trim=start_frame={start}:end_frame={start + count},setpts=PTS-STARTPTS",
              "-af", f"atrim=start={start / 25}:end={(start + count) / 25},asetpts=PTS-STARTPTS",
              "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-r", "25",
              "-c:a", "aac", dest)
    return dest


@pytest.fixture(scope="module")
def segments(media, tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("segments")
    return [cut(media.video, d / name, start, count) for name, (start, count) in zip(ODD_NAMES, CUTS)]


def test_merge_is_frame_accurate_with_odd_names(segments, tmp_path):
    out = tmp_path / "merged 'out' $x.mp4"
    result = merge_segments([str(p) for p in segments], out)
    assert Path(result) == out.absolute() and out.exists()
    expected = sum(count for _, count in CUTS)
    assert [decoded_frames(p) for p in segments] == [c for _, c in CUTS]
    assert decoded_frames(out) == expected
    stats = video_stream_stats(out)
    assert stats.frames == expected and stats.fps == 25
    assert abs(float(stats.duration) - expected / 25) < 1 / 25
    assert not stats.has_audio  # the delivery audio is added by the final encode
    with av.open(str(out)) as c:  # stream copy: same codec, no re-encode
        assert c.streams.video[0].codec_context.name == "h264"
    assert not list(tmp_path.glob("*.part*"))


def test_merge_frames_in_order(segments, tmp_path):
    """The first frame of the merge equals the first frame of segment 1, the join frame that of segment 2."""
    out = merge_segments([str(p) for p in segments], tmp_path / "m.mp4")
    with av.open(out) as c:
        frames = [f.to_ndarray(format="gray") for _, f in zip(range(27), c.decode(video=0))]
    with av.open(str(segments[1])) as c:
        seg2_first = next(c.decode(video=0)).to_ndarray(format="gray")
    assert (frames[25] == seg2_first).all()


def test_single_segment_is_used_as_is(segments, tmp_path):
    assert merge_segments([str(segments[0])], tmp_path / "x.mp4") == str(segments[0])
    assert not (tmp_path / "x.mp4").exists()


def test_mismatched_segments_are_refused(segments, media, tmp_path):
    with pytest.raises(MediaToolError, match="share size and rate"):
        merge_segments([str(segments[0]), str(media.outro)], tmp_path / "bad.mp4")


def test_concat_quote_rules():
    assert concat_quote("/a/b c.mp4") == b"'/a/b c.mp4'"
    assert concat_quote("/a/it's.mp4") == b"'/a/it'\\''s.mp4'"
    with pytest.raises(ValueError):
        concat_quote("/a/line\nbreak.mp4")


def test_prefect_task_wrapper():
    assert merge.name == "merge" and merge.fn.__name__ == "merge"
