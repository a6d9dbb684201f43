"""Sync estimator cost: seconds per minute of 1080p video of the weight-free AV sync estimate (audio decode +
speech envelope + mouth series + NCC over ±15 frames) *reusing* the face track, against the face track stage's
own time on the same clip. Target: estimator ≤ 10 % of the face stage.

Clip: the benchmarks' talking astronaut, 1920x1080 @ 30 fps with camera-like noise and its own speech track
(`_common.talking_inputs`). Both costs are linear in the clip's length; figures are scaled to one minute.

    python bench/sync_estimator.py [--seconds 10] [--runs 3] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, append_results, talking_inputs  # noqa: E402


def best_of(runs: int, fn) -> tuple[float, float, object]:
    """(best wall seconds, CPU seconds of that run, last result) of ``fn()``."""
    best, best_cpu, result = float("inf"), 0.0, None
    for _ in range(runs):
        started, cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall = time.perf_counter() - started
        if wall < best:
            best, best_cpu = wall, time.process_time() - cpu
    return best, best_cpu, result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of the estimator (the best is reported)")
    ap.add_argument("--work", type=Path, default=BENCH_DIR / "_work" / "sync")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args(argv)

    from lipline.models.face.detect import FaceAnalyzer
    from lipline.models.face.track import compute_face_track
    from lipline.models.sync.envelope import speech_envelope
    from lipline.models.sync.measure import AUDIO_SR, measure_video, read_mono
    from lipline.models.sync.mouth import track_mouth_opening
    from lipline.models.sync.offset import estimate_offset

    video = talking_inputs(args.work, args.seconds, bumpers=False)["video"]
    load_before = os.getloadavg()[0]
    with FaceAnalyzer() as analyzer:
        tracks = {every: best_of(1, lambda: compute_face_track(video, landmark_every=every, analyzer=analyzer))
                  for every in (1, 2)}
    track = tracks[1][2]
    n, fps = track.frame_count, track.fps
    per_min = 60.0 / (n / fps)
    whole, whole_cpu, estimate = best_of(args.runs, lambda: measure_video(video, track=track))
    decode, _, samples = best_of(args.runs, lambda: read_mono(video))
    math_s, _, _ = best_of(args.runs, lambda: estimate_offset(
        track_mouth_opening(track), speech_envelope(samples, AUDIO_SR, fps, n), fps))
    lines = [f"- clip: {n} frames, {track.width}x{track.height} @ {fps:g} fps, H.264 with sensor noise + AAC speech "
             f"(astronaut portrait); usable face {int(track.valid.sum())}/{n}; estimate: {estimate.verdict}, "
             f"offset {estimate.offset_frames}, confidence {estimate.confidence:.1f} (its mouth is a drawn box, not "
             "lips: only the cost matters here)"]
    for every, (seconds, cpu, _) in tracks.items():
        lines.append(f"- face track stage (landmark_every={every}): {seconds:.2f} s → **{seconds * per_min:.1f} s per "
                     f"minute of video** (CPU {cpu * per_min:.1f} s/min)")
    lines += [f"- sync estimator reusing the track (audio decode + envelope + mouth + NCC), best of {args.runs}: "
              f"{whole * 1000:.0f} ms → **{whole * per_min:.2f} s per minute of video** (CPU "
              f"{whole_cpu * per_min:.2f} s/min); of which audio decode to 16 kHz mono {decode * per_min:.2f} s/min, "
              f"envelope + mouth + NCC {math_s * per_min:.3f} s/min",
              f"- estimator / face stage: **{100 * whole / tracks[1][0]:.1f} %** (landmark_every=1), "
              f"**{100 * whole / tracks[2][0]:.1f} %** (landmark_every=2); target ≤ 10 %: "
              f"{'met' if whole <= 0.1 * min(t[0] for t in tracks.values()) else 'NOT met'}",
              f"- 1-min load average before the runs: {load_before:.1f} on {os.cpu_count()} cores (other jobs share "
              "them; wall figures are upper bounds)"]
    if args.no_record:
        print("\n".join(lines))
    else:
        append_results(f"sync_estimator ({args.seconds:g} s 1080p30 talking clip, CPU)", "python bench/sync_estimator.py "
                       + " ".join(argv if argv is not None else sys.argv[1:]), lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
