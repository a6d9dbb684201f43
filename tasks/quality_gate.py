"""The quality gate: measure the lip-sync of every generated segment, re-run the ones that fail with the next
seed, flag what still fails.

Per segment, after the engine: the face of the engine's output frames is landmarked (MediaPipe FaceMesh, the
job's face choice) and its mouth opening correlated with the segment's own model audio (`models/sync`: offset in
frames, + = audio late; pass = |offset| ≤ 1 frame with a clear peak). A failing segment is run again with seed
+1, +2, … up to ``retries`` times (each seed is a different result key, so nothing stale is reused); the best
attempt is kept (a pass, else the highest peak correlation). Still failing: the segment is flagged
``needs_review`` and the job completes — or, with ``on_fail="fail"``, the job fails naming the segments.
The deliverable as a whole (all segments' mouth series and audio envelopes end to end) gets one estimate too.

A segment too short (or too faceless) for an estimate is recorded ``unmeasured``: neither retried nor flagged.
Dry-run engines (``passthrough``, ``bench-fixed-cost``) keep the original mouths: their segments are recorded
as ``skipped`` (measuring a mouth that was never meant to follow the dub would only flag every segment).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lipline.errors import LiplineError
from lipline.records import EngineResult, LipsyncOptions, QualityGateParams, Segment
from lipline.uris import local_path


class QualityGateFailed(LiplineError):
    """Segments still out of sync after every retry, with ``on_fail="fail"``."""


@dataclass
class SegmentVerdict:
    """One segment's gate record (the manifest's ``quality.segments[i]``)."""

    segment_index: int
    estimate: dict = field(default_factory=dict)  # SyncEstimate.to_dict()
    retries: int = 0
    seeds: list[int] = field(default_factory=list)
    needs_review: bool = False
    mouth: np.ndarray | None = field(default=None, repr=False)
    envelope: np.ndarray | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        return self.estimate.get("verdict") == "pass"

    def better_than(self, other: "SegmentVerdict") -> bool:
        if self.passed != other.passed:
            return self.passed
        return (self.estimate.get("peak_corr") or -1.0) > (other.estimate.get("peak_corr") or -1.0)

    def to_dict(self) -> dict:
        return {"segment_index": self.segment_index, **self.estimate, "retries": self.retries, "seeds": self.seeds,
                "needs_review": self.needs_review}


def measure_segment(result: EngineResult, segment: Segment, face: str, workdir: Path) -> SegmentVerdict:
    """The sync estimate of one engine output against its segment's model audio."""
    from lipline.models.face.track import compute_face_track
    from lipline.models.sync.envelope import speech_envelope
    from lipline.models.sync.measure import AUDIO_SR, measure_track, read_mono
    from lipline.models.sync.mouth import track_mouth_opening

    workdir.mkdir(parents=True, exist_ok=True)
    track = compute_face_track(local_path(result.uri, workdir), face, landmark_every=2)
    samples = read_mono(local_path(segment.audio_uri, workdir), AUDIO_SR)
    estimate = measure_track(track, samples, AUDIO_SR)
    envelope = speech_envelope(samples, AUDIO_SR, track.fps, n_frames=track.frame_count) if samples.size else None
    return SegmentVerdict(result.segment_index, estimate.to_dict(), mouth=track_mouth_opening(track),
                          envelope=envelope)


Rerun = Callable[[list[Segment], LipsyncOptions], list[EngineResult]]
Measure = Callable[[EngineResult, Segment], SegmentVerdict]


def gate(results: list[EngineResult], segments: list[Segment], options: LipsyncOptions, params: QualityGateParams,
         rerun: Rerun, measure: Measure, progress: Callable[[float], None] | None = None
         ) -> tuple[list[EngineResult], dict]:
    """Measure, retry and flag (see the module doc). Returns the kept results (in segment order) and the
    manifest's ``quality`` block."""
    from lipline.models.sync.offset import METRIC, PASS_MAX_OFFSET

    block: dict = {"metric": METRIC, "threshold": {"max_offset_frames": PASS_MAX_OFFSET}, "retries_allowed":
                   params.retries, "on_fail": params.on_fail, "segments": []}
    by_index = {s.index: s for s in segments}
    if not params.enabled:
        block["segments"] = [{"segment_index": r.segment_index, "verdict": "skipped", "reason": "quality gate off",
                              "retries": 0, "seeds": [], "needs_review": False} for r in results]
        return results, block
    kept = {r.segment_index: r for r in results}
    verdicts: dict[int, SegmentVerdict] = {}
    for n, r in enumerate(results):
        if r.dry_run:
            verdicts[r.segment_index] = SegmentVerdict(r.segment_index, {
                "verdict": "skipped", "reason": f"dry run ({r.engine}): the original mouths are kept"})
        else:
            verdicts[r.segment_index] = _unmeasured_is_not_a_failure(measure(r, by_index[r.segment_index]))
            verdicts[r.segment_index].seeds = [options.seed]
        if progress:
            progress((n + 1) / max(1, len(results)) / (1 + params.retries))
    for attempt in range(1, params.retries + 1):
        failing = [i for i, v in verdicts.items() if v.estimate.get("verdict") == "fail"]
        if not failing:
            break
        seeded = options.model_copy(update={"seed": options.seed + attempt})
        for r in rerun([by_index[i] for i in failing], seeded):
            v = _unmeasured_is_not_a_failure(measure(r, by_index[r.segment_index]))
            old = verdicts[r.segment_index]
            v.retries, v.seeds = attempt, [*old.seeds, seeded.seed]
            if v.better_than(old):
                verdicts[r.segment_index], kept[r.segment_index] = v, r
            else:
                old.retries, old.seeds = v.retries, v.seeds
        if progress:
            progress((attempt + 1) / (1 + params.retries))
    for v in verdicts.values():
        v.needs_review = v.estimate.get("verdict") == "fail"
    block["segments"] = [verdicts[r.segment_index].to_dict() for r in results]
    block["deliverable"] = _whole(verdicts, results)
    review = [v.segment_index for v in verdicts.values() if v.needs_review]
    block["needs_review"] = review
    if review and params.on_fail == "fail":
        raise QualityGateFailed(f"lip-sync out of sync after {params.retries} retries in segment(s) "
                                f"{', '.join(map(str, review))}: {verdicts[review[0]].estimate.get('reason')}; "
                                "see manifest/status, or run with quality_gate.on_fail=flag to deliver and review")
    return [kept[r.segment_index] for r in results], block


def _unmeasured_is_not_a_failure(v: SegmentVerdict) -> SegmentVerdict:
    """No estimate possible for want of material (under 2 s of frames with audio, or silent audio): recorded as
    ``unmeasured`` with the reason; another seed cannot change that, so it is neither retried nor flagged. A mouth
    that does not move or a face the engine lost is a failure (retried)."""
    from lipline.models.sync.offset import MIN_FRAMES

    e = v.estimate
    too_little = e.get("frames_used", 0) < MIN_FRAMES and not e.get("reason", "").startswith("no usable face")
    if e.get("verdict") == "fail" and e.get("offset_frames") is None and (too_little or "silent" in e.get("reason", "")):
        v.estimate = {**e, "verdict": "unmeasured"}
    return v


def _whole(verdicts: dict[int, SegmentVerdict], results: list[EngineResult]) -> dict | None:
    """One estimate over the generated segments end to end (mouth series and envelopes concatenated)."""
    from lipline.models.sync.offset import estimate_offset

    parts = [verdicts[r.segment_index] for r in results]
    measured = [v for v in parts if v.mouth is not None and v.envelope is not None and len(v.mouth) == len(v.envelope)]
    if not measured:
        return None
    fps = next(float(v.estimate["fps"]) for v in measured if v.estimate.get("fps"))
    mouth = np.concatenate([v.mouth for v in measured])
    envelope = np.concatenate([v.envelope for v in measured])
    return estimate_offset(mouth, envelope, fps).to_dict()
