"""The quality gate: retries failing segments with the next seed, keeps the best attempt, flags what still fails,
skips dry runs, does not retry what cannot be measured; and a real measurement of a real engine output."""

from __future__ import annotations

import numpy as np
import pytest

from lipline.records import EngineResult, LipsyncOptions, QualityGateParams, Segment
from lipline.tasks.quality_gate import QualityGateFailed, SegmentVerdict, gate, measure_segment


def seg(i: int) -> Segment:
    return Segment(index=i, start_frame=100 * i, end_frame=100 * (i + 1), fps=25, video_uri=f"v{i}",
                   audio_uri=f"a{i}")


def res(i: int, seed: int = 1247, dry_run: bool = False) -> EngineResult:
    return EngineResult(segment_index=i, uri=f"out-{i}-{seed}.mp4", engine="e", engine_version="1", dry_run=dry_run,
                        seconds=1.0, frames=100, settings={"seed": seed})


def verdict(i: int, ok: bool, peak: float = 0.5, offset: int | None = 0, frames: int = 100) -> SegmentVerdict:
    reason = "in sync" if ok else "lips do not follow the audio"
    return SegmentVerdict(i, {"verdict": "pass" if ok else "fail", "reason": reason, "offset_frames": offset,
                              "peak_corr": peak, "fps": 25.0, "frames_used": frames},
                          mouth=np.random.default_rng(i).random(100), envelope=np.random.default_rng(i).random(100))


class Scripted:
    """measure(): pass/fail per (segment, seed) from a script; rerun(): records what was re-run with which seed."""

    def __init__(self, passes: dict[tuple[int, int], bool], peaks: dict[tuple[int, int], float] | None = None):
        self.passes, self.peaks, self.reruns = passes, peaks or {}, []

    def measure(self, result: EngineResult, segment: Segment) -> SegmentVerdict:
        key = (result.segment_index, result.settings["seed"])
        return verdict(result.segment_index, self.passes.get(key, True), self.peaks.get(key, 0.5))

    def rerun(self, segments: list[Segment], options: LipsyncOptions) -> list[EngineResult]:
        self.reruns.append(([s.index for s in segments], options.seed))
        return [res(s.index, options.seed) for s in segments]


def test_a_failing_segment_is_retried_with_the_next_seeds_then_flagged():
    script = Scripted({(1, 1247): False, (1, 1248): False, (1, 1249): False}, {(1, 1248): 0.3, (1, 1249): 0.1})
    kept, block = gate([res(0), res(1), res(2)], [seg(0), seg(1), seg(2)], LipsyncOptions(), QualityGateParams(),
                       script.rerun, script.measure)
    assert script.reruns == [([1], 1248), ([1], 1249)]  # only the failing one, two retries, next seeds
    rows = {r["segment_index"]: r for r in block["segments"]}
    assert rows[1]["needs_review"] and rows[1]["retries"] == 2 and rows[1]["seeds"] == [1247, 1248, 1249]
    assert not rows[0]["needs_review"] and rows[0]["retries"] == 0 and block["needs_review"] == [1]
    assert kept[1].settings["seed"] == 1247  # no attempt was better than the first (peak 0.5 > 0.3 > 0.1)
    assert [r.segment_index for r in kept] == [0, 1, 2] and block["deliverable"]["verdict"] in ("pass", "fail")


def test_a_retry_that_passes_is_kept():
    script = Scripted({(0, 1247): False, (0, 1248): True})
    kept, block = gate([res(0)], [seg(0)], LipsyncOptions(), QualityGateParams(retries=3), script.rerun,
                       script.measure)
    assert script.reruns == [([0], 1248)] and kept[0].settings["seed"] == 1248
    assert block["segments"][0]["verdict"] == "pass" and block["segments"][0]["retries"] == 1
    assert not block["needs_review"]


def test_on_fail_fail_fails_the_job_naming_the_segment():
    script = Scripted({(0, 1247): False, (0, 1248): False})
    with pytest.raises(QualityGateFailed, match="segment.*0"):
        gate([res(0)], [seg(0)], LipsyncOptions(), QualityGateParams(retries=1, on_fail="fail"), script.rerun,
             script.measure)


def test_dry_runs_are_skipped_and_unmeasurable_segments_not_retried():
    script = Scripted({})
    kept, block = gate([res(0, dry_run=True)], [seg(0)], LipsyncOptions(), QualityGateParams(), script.rerun,
                       script.measure)
    assert block["segments"][0]["verdict"] == "skipped" and not script.reruns

    def too_short(result, segment):
        return SegmentVerdict(0, {"verdict": "fail", "offset_frames": None, "frames_used": 40,
                                  "reason": "too few frames with both a usable face and audio (40 < 50)"})

    _, block = gate([res(0)], [seg(0)], LipsyncOptions(), QualityGateParams(), script.rerun, too_short)
    assert block["segments"][0]["verdict"] == "unmeasured" and not script.reruns
    assert not block["segments"][0]["needs_review"]

    def still(result, segment):  # a mouth that does not move is a failure: retried
        return SegmentVerdict(0, {"verdict": "fail", "offset_frames": None, "frames_used": 100,
                                  "reason": "lips do not follow the audio: the mouth does not move"})

    _, block = gate([res(0)], [seg(0)], LipsyncOptions(), QualityGateParams(retries=1), script.rerun, still)
    assert script.reruns == [([0], 1248)] and block["segments"][0]["needs_review"]


def test_gate_off_measures_nothing():
    script = Scripted({(0, 1247): False})
    kept, block = gate([res(0)], [seg(0)], LipsyncOptions(), QualityGateParams(enabled=False), script.rerun,
                       script.measure)
    assert block["segments"][0]["verdict"] == "skipped" and not script.reruns


def test_measure_segment_on_real_media(media, tmp_path):
    """The real measurement: the test clip's drawn mouth does not follow an unrelated dub; the estimate says so
    and carries the mouth and envelope series for the deliverable-wide estimate."""
    from lipline import samples

    audio = samples.write_audio(tmp_path / "a.wav", samples.speech_like(4.0, sr=16000, channels=1, seed=9), sr=16000)
    segment = Segment(index=0, start_frame=0, end_frame=100, fps=25, video_uri=str(media.video), audio_uri=str(audio))
    result = EngineResult(segment_index=0, uri=str(media.video), engine="e", engine_version="1", dry_run=False,
                          seconds=0.0, frames=300)
    v = measure_segment(result, segment, "largest", tmp_path / "q")
    assert v.estimate["frames_used"] >= 50 and v.estimate["verdict"] in ("pass", "fail")
    assert v.mouth is not None and np.isfinite(v.mouth).mean() > 0.9 and v.envelope is not None
