"""Validation's full video decode (`lipline.tasks.probe.probe_media`), with and without its decoder options
(`VALIDATION_DECODE_OPTIONS`: the in-loop deblocking filter skipped), on the kinds of source it meets.

Sources, made from the 1080p30 talking clip of `pipeline_overhead.py` (camera noise on):

* `h264-camera`: 30 s re-encoded with libx264 ``-preset medium -crf 18`` (CABAC, deblocking on: what phones and
  cameras write);
* `hevc`: 10 s re-encoded with libx265 ``-preset fast -crf 20`` (deblocking and SAO on);
* `h264-ultrafast`: 30 s of the pipeline bench's own source (x264 ultrafast: CAVLC, no deblocking, so the option
  has nothing to skip; a control).

Each probe runs in this process, the two settings alternating, ``--repeat`` times each; the figure is the median of
the process's CPU seconds (every decoder thread included). The corrupt-frame detection is the same either way (the
probe tests check it); this only measures the cost.

    python bench/validation_decode.py --work bench/_work
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, RESULTS, append_results, talking_inputs  # noqa: E402

from lipline import samples  # noqa: E402
from lipline.tasks import probe  # noqa: E402

SOURCES = {  # name: (seconds, ffmpeg video codec arguments; None = the talking clip as it is)
    "h264-camera": (30.0, ["-c:v", "libx264", "-preset", "medium", "-crf", "18"]),
    "hevc": (10.0, ["-c:v", "libx265", "-preset", "fast", "-crf", "20", "-x265-params", "log-level=error"]),
    "h264-ultrafast": (30.0, None),
}


def source(work: Path, name: str) -> Path:
    seconds, codec = SOURCES[name]
    path = work / f"validation-{name}.mp4"
    if not path.exists():
        talking = talking_inputs(work, 60.0, bumpers=False)["video"]
        video = ["-c:v", "copy"] if codec is None else [*codec, "-pix_fmt", "yuv420p"]
        samples.ffmpeg("-i", talking, "-t", str(seconds), "-an", *video, path)
    return path


def cpu_of_probe(path: Path, options: dict[str, str]) -> tuple[float, int]:
    saved = dict(probe.VALIDATION_DECODE_OPTIONS)
    probe.VALIDATION_DECODE_OPTIONS.clear()
    probe.VALIDATION_DECODE_OPTIONS.update(options)
    try:
        started = time.process_time()
        result = probe.probe_media(str(path))
        return time.process_time() - started, result.video.frame_count if result.video else 0
    finally:
        probe.VALIDATION_DECODE_OPTIONS.clear()
        probe.VALIDATION_DECODE_OPTIONS.update(saved)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=BENCH_DIR / "_work")
    ap.add_argument("--sources", default=",".join(SOURCES), help="comma-separated: " + ", ".join(SOURCES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-results", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = ap.parse_args()
    options = dict(probe.VALIDATION_DECODE_OPTIONS)
    lines = [f"- options: `{options}` against FFmpeg's defaults; median of {args.repeat} alternating runs, CPU "
             "seconds of the probe (all decoder threads)"]
    for name in args.sources.split(","):
        path = source(args.work, name)
        default, skipped = [], []
        frames = 0
        for _ in range(args.repeat):
            cpu, frames = cpu_of_probe(path, {})
            default.append(cpu)
            cpu, frames = cpu_of_probe(path, options)
            skipped.append(cpu)
        before, after = statistics.median(default), statistics.median(skipped)
        seconds = SOURCES[name][0]
        lines.append(f"- {name} ({seconds:.0f} s 1080p30, {frames} frames): {before:.2f} → {after:.2f} CPU s "
                     f"({(after / before - 1) * 100:+.0f} %; {after / seconds * 60:.1f} CPU s per minute of video)")
    command = "python bench/validation_decode.py " + " ".join(sys.argv[1:])
    append_results("validation_decode (the probe's full decode, deblocking skipped or not)", command.strip(), lines,
                   None if args.no_results else RESULTS)


if __name__ == "__main__":
    main()
