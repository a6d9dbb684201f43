"""`lipline run`'s in-process path end to end (real Prefect, real ffmpeg): the validation started before Prefect
(`lipline.runner.prefetch_validation`) is the one the flow uses, and a ping-pong job with the passthrough engine
writes no segment videos: the one final encode reads the frames in the plan's order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from lipline.params import LocalizeParams
from lipline.runner import run_localize
from lipline.tasks import prefetch
from lipline.tasks.probe import probe_media
from tests import media_factory as mf

pytestmark = pytest.mark.integration


def test_prefetched_validation_and_ping_pong_in_one_encode(shared_prefect_api, tmp_path, monkeypatch):
    face = mf.face_png(tmp_path / "face.png")
    video = mf.talking_video(tmp_path / "talk.mp4", face, 2.0, width=192, height=108, fps="25")
    dub = mf.write_audio(tmp_path / "dub.wav", mf.speech_like(3.0, pauses=((1.0, 1.3),)))
    taken: list = []

    def spy(files, overrides, faces):
        found = real_take(files, overrides, faces)
        taken.append(found)
        return found

    real_take = prefetch.take
    monkeypatch.setattr(prefetch, "take", spy)
    written: list[Path] = []
    import lipline.tasks.segment as segment

    real_encode = segment._encode_segment
    monkeypatch.setattr(segment, "_encode_segment", lambda reader, runs, rate, out, *a: (
        written.append(out), real_encode(reader, runs, rate, out, *a))[1])
    params = LocalizeParams(video_uri=str(video), audio_uri=str(dub), store=str(tmp_path / "store"), job_id="pp",
                            engine="passthrough", max_segment_s=1.2,
                            contract_overrides={"video.short_side.min_px": 64, "audio.duration.min_s": 1})
    with temporary_settings({PREFECT_API_URL: shared_prefect_api}):  # the package's server, not an embedded one
        result = run_localize(params, show_progress=False)
    assert len(taken) == 1 and taken[0] is not None and taken[0].done()  # the flow used the prefetched reports
    assert written == []  # no intermediate encode
    manifest = json.loads(Path(result.manifest_uri).read_text())
    assert manifest["length_mode"] == "pingpong" and len(manifest["segments"]) >= 2
    final = probe_media(result.final_uri)
    assert final.video.frame_count == 75 and abs(final.audio.duration_s - 3.0) < 0.05
