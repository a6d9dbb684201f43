"""The ping-pong frame feed alone: CPU seconds of `lipline.frames.pipe_frames_in_order` writing a ping-pong plan's
raw frames to /dev/null (what the one final encode reads on stdin for a dub longer than its video), without the
encode itself.

Default source: the 4K case of `pipeline_overhead.py` (5 s 3840x2160 at 30 fps under a 10.8 s dub: forward 150,
backwards 150, forward 24). ``--frames-module FILE`` times another implementation of `lipline/frames.py` (e.g. an
earlier commit's, from `git show REV:lipline/frames.py > old.py`) on the same plan, for a before/after.

    python bench/frame_feed.py --work bench/_work
    python bench/frame_feed.py --frames-module /tmp/old_frames.py --no-results
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, append_results, talking_inputs  # noqa: E402

from lipline.tasks.segment import LengthModes, _timeline  # noqa: E402 - the plan's frame runs, without a dub file


def load_frames_module(path: Path | None):
    if path is None:
        from lipline import frames

        return frames
    spec = importlib.util.spec_from_file_location("frames_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=BENCH_DIR / "_work")
    ap.add_argument("--dub-s", type=float, default=10.8, help="dub length: the plan's output length (default 10.8)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--frames-module", type=Path, default=None, help="another lipline/frames.py to time instead")
    ap.add_argument("--no-results", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = ap.parse_args()
    video = talking_inputs(args.work, 5.0, 3840, 2160, 30, bumpers=False)["video"]
    rate, n_source = Fraction(30), 150
    _total, _mode, runs = _timeline(n_source, args.dub_s * float(rate), LengthModes(audio_longer="pingpong"), "dub",
                                    float(rate))
    frames = load_frames_module(args.frames_module)
    seconds = []
    for _ in range(args.repeat):
        with open(os.devnull, "wb") as out, tempfile.TemporaryDirectory(dir=args.work) as spill:
            started = time.process_time()
            written = frames.pipe_frames_in_order(video, rate, n_source, runs, out, spill_dir=Path(spill))
            seconds.append(time.process_time() - started)
    which = str(args.frames_module) if args.frames_module else "lipline/frames.py"
    lines = [f"- implementation: {which}",
             f"- plan: {', '.join(f'{r.length} frames step {r.step:+d}' for r in runs)} = {written} frames of 3840x2160",
             f"- CPU seconds of the feed (process time, {args.repeat} runs): "
             + ", ".join(f"{s:.1f}" for s in seconds)]
    print("\n".join(lines))
    if not args.no_results:
        append_results("frame_feed (5 s 4K30 source, ping-pong to 10.8 s, raw frames to /dev/null)",
                       "python bench/frame_feed.py " + " ".join(sys.argv[1:]), lines)


if __name__ == "__main__":
    main()
