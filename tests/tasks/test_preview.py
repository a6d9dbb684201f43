"""The preview's decision logic (slowdown of the lip-sync stage, judged as it progresses) and its inputs (real
ffmpeg on generated media: short side ≤ 512 px, first 30 s). The flow itself: tests/integration/test_preview.py."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from lipline.flows.preview import Resubmission, resubmission_markdown
from lipline.params import LocalizeParams
from lipline.samples import pattern_clip, speech_like, write_audio
from lipline.tasks.preview import (PREVIEW_MAX_SECONDS, PreviewTooSlow, Slowdown, SlowdownWatch, prepare_preview)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_watch_starts_with_the_lipsync_stage_and_stops_a_slow_one_while_segments_remain():
    clock = Clock()
    watch = SlowdownWatch("job-1", video_s_total=8.0, limit=4.0, clock=clock)
    watch.update("validate", 1.0)
    clock.now += 50.0                     # validation, normalize, segment: not lip-sync, not counted
    watch.update("segment", 1.0)
    clock.now += 6.0
    watch.update("lipsync", 0.25)         # 2 s of video in 6 s: 3x real time, under 4
    assert watch.last == Slowdown(wall_s=6.0, video_s_done=2.0, video_s_total=8.0, limit=4.0)
    assert watch.last.slowdown == pytest.approx(3.0)
    clock.now += 14.0
    with pytest.raises(PreviewTooSlow) as raised:
        watch.update("lipsync", 0.5)      # 4 s of video in 20 s: 5x
    figures = raised.value.figures
    assert (figures.wall_s, figures.video_s_done, figures.slowdown) == (20.0, 4.0, 5.0)
    assert "5.00 s per second of video after 4.00 of 8.00 s (limit 4" in str(raised.value)
    assert figures.as_dict()["slowdown"] == 5.0


def test_a_finished_lipsync_stage_is_never_stopped_and_reports_before_it_are_ignored():
    clock = Clock()
    watch = SlowdownWatch("job-2", video_s_total=4.0, limit=2.0, clock=clock)
    watch.update("lipsync", 0.5)          # no segment stage seen yet: nothing to measure from
    assert watch.last is None
    watch.update("segment", 1.0)
    clock.now += 40.0
    watch.update("lipsync", 1.0)          # 10x, but every segment is done: finishing here is cheaper
    assert watch.last.slowdown == pytest.approx(10.0) and not watch.last.too_slow()


@pytest.mark.parametrize("wall, done, too_slow", [(8.0, 2.0, False), (8.01, 2.0, True), (1.0, 0.0, True)])
def test_the_limit_is_seconds_of_wall_per_second_of_video(wall, done, too_slow):
    assert Slowdown(wall_s=wall, video_s_done=done, video_s_total=4.0, limit=4.0).too_slow() is too_slow


def _size_and_seconds(path: Path) -> tuple[int, int, float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = sum(1 for _ in c.decode(s))
        return s.width, s.height, frames / float(s.average_rate)


@pytest.mark.parametrize("w, h, expected", [(1280, 720, (910, 512)), (720, 1280, (512, 910)), (320, 240, (320, 240))])
def test_preview_video_has_a_short_side_of_at_most_512_px_without_upscaling(tmp_path, w, h, expected):
    video = pattern_clip(tmp_path / "in.mp4", w=w, h=h, dur=1.0)
    dub = write_audio(tmp_path / "dub.wav", speech_like(1.2))
    params = LocalizeParams(video_uri=str(video), audio_uri=str(dub))
    made = prepare_preview.fn(params, tmp_path / "preview")
    assert (made.width, made.height) == expected
    assert _size_and_seconds(made.video)[:2] == expected
    assert made.video_s == pytest.approx(1.0, abs=0.05) and made.audio_s == pytest.approx(1.2, abs=0.01)
    assert "cut from" not in made.notice(params)


def test_preview_takes_the_first_30_s_of_a_longer_job_and_leaves_bumpers_out(tmp_path):
    video = pattern_clip(tmp_path / "long.mp4", w=160, h=120, dur=PREVIEW_MAX_SECONDS + 2)
    dub = write_audio(tmp_path / "long.wav", speech_like(PREVIEW_MAX_SECONDS + 3, channels=1))
    params = LocalizeParams(video_uri=str(video), audio_uri=str(dub), intro_uri=str(video))
    made = prepare_preview.fn(params, tmp_path / "preview")
    assert _size_and_seconds(made.video)[2] == pytest.approx(PREVIEW_MAX_SECONDS, abs=0.05)
    assert made.audio_s == pytest.approx(PREVIEW_MAX_SECONDS, abs=0.01)
    assert made.source_audio_s == pytest.approx(PREVIEW_MAX_SECONDS + 3, abs=0.01)
    assert made.lipsync_seconds(params) == made.audio_s
    assert made.lipsync_seconds(params.model_copy(update={"video_longer": "pad-silence"})) == max(made.audio_s,
                                                                                                made.video_s)
    notice = made.notice(params)
    assert "160x120" in notice and "cut from video 32.0 s, dub 33.0 s" in notice and "intro left out" in notice


def test_resubmission_artifact_names_the_reason_the_figures_and_the_new_run():
    params = LocalizeParams(video_uri="s3://b/v.mp4", audio_uri="s3://b/a.wav", job_id="pv-1")
    moved = Resubmission(reason="too slow", detail="lip-sync ran 6.00 s per second", measured={"slowdown": 6.0,
                         "limit": 4.0}, deployment="preview/preview-gpu", flow_run_id="1234",
                         flow_run_name="brave-otter", flow_run_url="http://127.0.0.1:4200/runs/flow-run/1234")
    text = resubmission_markdown(params, moved)
    assert "**too slow**" in text and "| slowdown | 6.0 |" in text and "| limit | 4.0 |" in text
    assert "[brave-otter](http://127.0.0.1:4200/runs/flow-run/1234)" in text and "`preview/preview-gpu`" in text
    assert "`pv-1`" in text
