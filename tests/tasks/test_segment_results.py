"""Engine results keyed by content: the key follows every input, a finished result is reused, an unfinished
one is not, `recompute` recomputes."""

from __future__ import annotations

import json

import pytest

from lipline.models.registry import get_engine
from lipline.records import LipsyncOptions, Segment
from lipline.store import Store
from lipline.tasks.lipsync import sync_segment
from lipline.tasks.segment_results import (CACHE_PREFIX, OUTPUT_NAME, RESULT_NAME, SegmentResults, result_key,
                                           segment_content_key)


@pytest.fixture
def audio(tmp_path):
    from lipline import samples

    return samples.write_audio(tmp_path / "seg.wav", samples.speech_like(1.0, sr=16000, channels=1), sr=16000)


def test_content_key_follows_every_input(audio, tmp_path):
    base = dict(video_sha256="a" * 64, picture={"frames": 100, "fps": "25/1", "width": 640, "height": 360},
                source_frames=list(range(10)), audio_path=audio, faces_key="f1")
    key = segment_content_key(**base)
    assert key == segment_content_key(**base)  # deterministic
    other_audio = tmp_path / "other.wav"
    other_audio.write_bytes(audio.read_bytes()[:-2] + b"\x01\x00")
    variants = [dict(video_sha256="b" * 64), dict(picture={**base["picture"], "fps": "30000/1001"}),
                dict(source_frames=list(range(9, -1, -1))), dict(audio_path=other_audio), dict(faces_key="f2")]
    keys = {segment_content_key(**{**base, **v}) for v in variants}
    assert len(keys) == len(variants) and key not in keys


def test_result_key_follows_engine_identity_and_options():
    seg = Segment(index=0, start_frame=0, end_frame=10, fps=25, video_uri="v", audio_uri="a", content_key="c" * 64)
    identity = {"engine": "latentsync", "version": "1", "checkpoints": {"unet": "1" * 64}}
    key = result_key(seg, identity, LipsyncOptions())
    assert key != result_key(seg, {**identity, "checkpoints": {"unet": "2" * 64}}, LipsyncOptions())
    assert key != result_key(seg, identity, LipsyncOptions(seed=1))
    assert key != result_key(seg, identity, LipsyncOptions(steps=10))
    assert key != result_key(seg, identity, LipsyncOptions(sampler="dpmpp"))
    assert key != result_key(seg.model_copy(update={"content_key": "d" * 64}), identity, LipsyncOptions())
    with pytest.raises(ValueError):
        result_key(seg.model_copy(update={"content_key": None}), identity, LipsyncOptions())


def test_a_finished_result_is_reused_and_recompute_recomputes(media, audio, tmp_path, monkeypatch):
    monkeypatch.setenv("LIPLINE_BENCH_SECONDS_PER_FRAME", "0")
    store = Store(str(tmp_path / "store"))
    cache = SegmentResults(store)
    seg = Segment(index=3, start_frame=0, end_frame=20, fps=25, video_uri=str(media.video), audio_uri=str(audio),
                  frame_range=(5, 25), content_key="e" * 64)
    first = sync_segment(seg, "bench-fixed-cost", tmp_path / "w1", cache=cache)
    assert not first.reused and first.cache_key and first.frames == 20
    folder = tmp_path / "store" / CACHE_PREFIX / first.cache_key
    assert json.loads((folder / RESULT_NAME).read_text())["cache_key"] == first.cache_key
    written = (folder / OUTPUT_NAME).stat().st_mtime_ns

    again = sync_segment(seg.model_copy(update={"index": 7}), "bench-fixed-cost", tmp_path / "w2", cache=cache)
    assert again.reused and again.segment_index == 7 and again.uri == first.uri
    assert (folder / OUTPUT_NAME).stat().st_mtime_ns == written  # nothing recomputed or rewritten
    assert not (tmp_path / "w2").exists()

    forced = sync_segment(seg, "bench-fixed-cost", tmp_path / "w3", cache=cache, recompute=True)
    assert not forced.reused and forced.cache_key == first.cache_key
    assert (folder / OUTPUT_NAME).stat().st_mtime_ns != written  # written again

    (folder / RESULT_NAME).unlink()  # an entry without its completion marker is not a result
    assert cache.load(first.cache_key, 3) is None
    assert get_engine("bench-fixed-cost", kind="video").identity(LipsyncOptions())["engine"] == "bench-fixed-cost"


def test_engines_that_keep_their_input_cache_nothing(media, audio, tmp_path):
    store = Store(str(tmp_path / "store"))
    seg = Segment(index=0, start_frame=0, end_frame=20, fps=25, video_uri=str(media.video), audio_uri=str(audio),
                  frame_range=(0, 20), content_key="f" * 64)
    result = sync_segment(seg, "passthrough", tmp_path / "w", cache=SegmentResults(store))
    assert result.uri == str(media.video) and result.cache_key is None
    assert not (tmp_path / "store" / CACHE_PREFIX).exists()
