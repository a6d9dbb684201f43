"""Peak RSS of `lipline run --engine passthrough` (the process and all its children: ffmpeg, the embedded
Prefect server) for 1, 5 and 10 min 1080p inputs. Target: flat (±10 %) and ≤ 2 GB.

Two figures per run: the largest single process (getrusage(RUSAGE_CHILDREN) of a fresh wrapper, which reports the
largest descendant) and the whole job (the CLI process and all its descendants summed, sampled every 0.1 s from
/proc by `pipeline_overhead.timed`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH_DIR, append_results, talking_inputs  # noqa: E402
from pipeline_overhead import timed  # noqa: E402

WRAPPER = r"""
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """(largest single process, whole process tree summed) in MB."""
    _seconds, tree, out, _cpu = timed([sys.executable, "-c", WRAPPER, *cmd])
    return int(out.strip().splitlines()[-1]) / 1024, tree / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", default="1,5,10")
    ap.add_argument("--work", type=Path, default=BENCH_DIR / "_work")
    args = ap.parse_args()
    rows = []
    for minutes in [float(m) for m in args.minutes.split(",")]:
        media = talking_inputs(args.work, minutes * 60, bumpers=False, camera_noise=False)
        started = time.perf_counter()
        peak, tree = peak_rss_mb([sys.executable, "-m", "lipline.cli", "run", str(media["video"]), str(media["audio"]),
                            "--store", str(args.work / "store"), "--quiet", "--job-id", f"mem-{int(minutes)}m-{int(time.time())}"])
        rows.append((minutes, peak, time.perf_counter() - started, tree))
    lo, hi = min(r[1] for r in rows), max(r[1] for r in rows)
    lines = ["| input | peak RSS (largest process) | peak RSS (whole job, summed) | wall |", "|---|---|---|---|"]
    lines += [f"| {m:g} min 1080p30 | {p:.0f} MB | {t:.0f} MB | {w:.0f} s |" for m, p, w, t in rows]
    lo_t, hi_t = min(r[3] for r in rows), max(r[3] for r in rows)
    lines.append(f"\nwhole job: spread {100 * (hi_t - lo_t) / lo_t:.1f} %, max {hi_t:.0f} MB")
    lines.append(f"\nspread {100 * (hi - lo) / lo:.1f} % (target ±10 %), max {hi:.0f} MB (target ≤ 2048 MB)")
    append_results("memory (peak RSS of `lipline run`)", "python bench/memory.py " + " ".join(sys.argv[1:]), lines)


if __name__ == "__main__":
    main()
