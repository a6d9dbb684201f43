"""Pipeline overhead: `lipline run --engine passthrough` on a 60 s 1080p30 talking clip with subtitles, intro and
outro, against one plain `ffmpeg -i in.mp4 -c:v libx264 -preset P -c:a aac out.mp4` of the same input, same run.

The talking clip carries camera-like sensor noise (a still image would encode unrealistically fast and make every
fixed cost look large). Both encodes use the same preset and CRF 23 (ffmpeg's default). Target: ≤ 1.3x (one decode, one final encode). Prints and appends to bench/RESULTS.md:
the ratio of the whole CLI call (including Prefect's embedded-API start) and of the flow alone.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, append_results, talking_inputs  # noqa: E402

from lipline.media import ffmpeg_exe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--preset", default="veryfast")
    ap.add_argument("--work", type=Path, default=BENCH_DIR / "_work")
    args = ap.parse_args()
    media = talking_inputs(args.work, args.seconds)

    started = time.perf_counter()
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(media["video"]), "-c:v", "libx264",
                    "-preset", args.preset, "-c:a", "aac", str(args.work / "plain.mp4")], check=True)
    plain = time.perf_counter() - started

    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "INFO"}
    cmd = [sys.executable, "-m", "lipline.cli", "run", str(media["video"]), str(media["audio"]),
           "--subtitles", str(media["subtitles"]), "--intro", str(media["intro"]), "--outro", str(media["outro"]),
           "--engine", "passthrough", "--preset", args.preset, "--crf", "23", "--store", str(args.work / "store"), "--job-id", f"overhead-{int(time.time())}",
           "--quiet"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    total = time.perf_counter() - started
    manifest_uri = proc.stdout.strip().rsplit("/", 1)[0] + "/manifest.json"
    import json

    manifest = json.loads(Path(manifest_uri).read_text())
    stages = manifest["timings_s"]
    flow_s = sum(stages.values())
    stage_text = ", ".join(f"{k} {v:.1f}s" for k, v in stages.items())
    append_results(
        f"pipeline_overhead ({args.seconds:.0f} s 1080p30, subtitles + intro + outro, preset {args.preset})",
        "python bench/pipeline_overhead.py " + " ".join(sys.argv[1:]),
        [f"- plain ffmpeg libx264 -preset {args.preset} + aac: {plain:.1f} s",
         f"- `lipline run --engine passthrough`, whole CLI call: {total:.1f} s → **{total / plain:.2f}x** (target ≤ 1.3x)",
         f"- flow stages only (no process/Prefect start): {flow_s:.1f} s → {flow_s / plain:.2f}x",
         f"- stages: {stage_text}",
         "- note: the deliverable is longer than the plain encode (3 s intro + 3 s outro are encoded too) and has "
         "subtitles burnt in; both encodes use CRF 23"])


if __name__ == "__main__":
    main()
