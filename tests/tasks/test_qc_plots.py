"""The contact sheet's frame grabber returns exactly the frame shown at each time, whatever the keyframe layout
(checked against decoding every frame), with B-frames, several keyframes or one."""

from __future__ import annotations

import os
import subprocess

import av
import numpy as np
import pytest

from lipline.media import ffmpeg_exe
from lipline.tasks import qc_plots
from lipline.tasks.qc_plots import frames_at, keyframe_times, sheet_times


def _every_frame(path, times):
    found = [None] * len(times)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate)
        for frame in container.decode(stream):
            for i, t in enumerate(times):
                if found[i] is None and frame.time + 0.5 / rate > t:
                    found[i] = frame.to_ndarray(format="bgr24")
    return found


@pytest.mark.parametrize("gop", [7, 1000])
def test_frames_at_matches_decoding_every_frame(tmp_path, gop):
    video = tmp_path / f"g{gop}.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=4",
                    "-c:v", "libx264", "-g", str(gop), "-bf", "2", "-pix_fmt", "yuv420p", str(video)], check=True)
    times = [3.5, 0.0, 0.01, 1.0, 1.02, 0.5, 2.96, 3.99, 4.5, 1.0]  # unsorted, repeated, one frame twice, past the end
    # (frames are taken by nearest time: 3.99 s is past the last frame, 3.96 s, by more than half a frame, like 4.5 s)
    got, expected = frames_at(video, times), _every_frame(video, times)
    assert [g is None for g in got] == [e is None for e in expected] == [False] * 7 + [True, True, False]
    for t, g, e in zip(times, got, expected):
        if e is not None:
            assert np.array_equal(g, e), f"t={t}"


def test_keyframe_times_are_the_streams_keyframes(tmp_path):
    video = tmp_path / "g10.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=2",
                    "-c:v", "libx264", "-g", "10", "-keyint_min", "10", "-sc_threshold", "0", "-bf", "2",
                    "-pix_fmt", "yuv420p", str(video)], check=True)
    assert keyframe_times(video) == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6])
    # read once while the file is unchanged (the job's sheet times and the contact sheet both ask)
    hits = qc_plots._keyframe_times.cache_info().hits
    assert keyframe_times(video) == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6])
    assert qc_plots._keyframe_times.cache_info().hits == hits + 1
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=2",
                    "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", str(tmp_path / "g25.mp4")], check=True)
    os.replace(tmp_path / "g25.mp4", video)  # another file at the same path: read again
    assert keyframe_times(video) == pytest.approx([0.0, 1.0])


def test_sheet_times_are_slice_centres_on_frames_or_on_a_near_keyframe():
    # 10 s at 25 fps, 5 columns: centres 1, 3, 5, 7, 9 s; a slice is 2 s, a quarter 0.5 s
    assert sheet_times(10.0, 5, 25) == pytest.approx([1.0, 3.0, 5.0, 7.0, 9.0])
    # keyframes within 0.5 s move a time onto them (the nearest wins); 6.0 s is too far from 7 s
    assert sheet_times(10.0, 5, 25, [0.0, 0.6, 2.8, 3.4, 4.52, 6.0, 9.9]) == pytest.approx([0.6, 2.8, 4.52, 7.0, 9.0])
    # every time lands on a frame boundary of the rate
    for t in sheet_times(10.0, 7, 30000 / 1001, [1.2345]):
        assert abs(t * 30000 / 1001 - round(t * 30000 / 1001)) < 1e-6
    # more columns than frames: distinct times, never past the last frame
    assert sheet_times(0.12, 8, 25) == pytest.approx([0.0, 0.04, 0.08])
    assert sheet_times(0.0, 8, 25) == []
    with pytest.raises(ValueError):
        sheet_times(1.0, 0, 25)
