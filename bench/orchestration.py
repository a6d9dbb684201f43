"""Orchestration bench: per-segment overhead of the GPU fan-out and the speed-up with 1, 2, 4 GPU workers.

On a real Prefect server (``prefect server start`` on loopback) with N ``lipline gpu-worker`` processes
(``LIPLINE_GPU_BACKEND=task-workers``) and a local-folder store, one job of 12 segments runs through
``lipline run`` with the BENCH-ONLY ``bench-fixed-cost`` engine (it copies the frames and takes a fixed time per
frame: the engine cost is known, so what is left is orchestration).

Per segment: overhead = everything but engine time and waiting for a busy worker (`segment_overheads`; median
and max; target median ≤ 1 s). Per N: the lip-sync stage's wall time and the speed-up over N = 1 (target ≥ 0.85 × N).
``--recompute`` on every run so each measures engine work, not the result cache.

    python bench/orchestration.py [--workers 1,2,4] [--seconds-per-frame 0.08]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent))

from lipline import PREFECT_ENV_DEFAULTS, samples  # noqa: E402

PREFECT = str(Path(sys.executable).parent / "prefect")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(check, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"bench: {what} not ready after {timeout:.0f}s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--seconds-per-frame", type=float, default=0.08)
    ap.add_argument("--segments", type=int, default=12)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lipline-bench-orch-"))
    seg_s = 2.0
    duration = args.segments * seg_s
    face = samples.face_png(work / "face.png")
    video = samples.talking_video(work / "talk.mp4", face, duration)
    dub = samples.write_audio(work / "dub.wav", samples.speech_like(duration, seed=5))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LIPLINE_"))}
    env.update({**PREFECT_ENV_DEFAULTS, "PREFECT_API_URL": api, "PREFECT_HOME": str(work / "prefect"),
                "PREFECT_LOGGING_LEVEL": "WARNING", "LIPLINE_GPU_BACKEND": "task-workers",
                "LIPLINE_BENCH_SECONDS_PER_FRAME": str(args.seconds_per_frame), "OMP_NUM_THREADS": "1"})
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=open(work / "server.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    rows = []
    try:
        wait_for(lambda: httpx.get(f"{api}/health", timeout=2).is_success, "prefect server")
        workers: list[subprocess.Popen] = []
        for n in [int(x) for x in args.workers.split(",")]:
            while len(workers) < n:
                workers.append(subprocess.Popen([sys.executable, "-m", "lipline.cli", "gpu-worker"], env=env,
                                                stdout=open(work / f"worker{len(workers)}.log", "wb"),
                                                stderr=subprocess.STDOUT, start_new_session=True))
            wait_for(lambda: len(httpx.post(f"{api}/task_workers/filter", json={}, timeout=5).json()) >= n,
                     f"{n} GPU workers")
            store = work / "store"
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "lipline.cli", "run", str(video), str(dub), "--engine",
                                   "bench-fixed-cost", "--max-segment-s", str(seg_s), "--store", str(store),
                                   "--job-id", f"orch-{n}", "--recompute", "--quiet"], env=env, capture_output=True,
                                  text=True, cwd=work)
            wall = time.perf_counter() - started
            if proc.returncode:
                raise SystemExit(f"bench: job failed with {n} workers:\n{proc.stderr[-3000:]}")
            manifest = json.loads((store / f"orch-{n}" / "manifest.json").read_text())
            segs = manifest["engine"]["segments"]
            overheads = segment_overheads(segs)
            rows.append({"workers": n, "segments": len(segs), "job_wall_s": round(wall, 2),
                         "lipsync_stage_s": manifest["timings_s"]["lipsync"],
                         "engine_s_total": round(sum(s["seconds"] for s in segs), 2),
                         "overhead_median_s": round(statistics.median(overheads), 3),
                         "overhead_max_s": round(max(overheads), 3),
                         "queued_median_s": round(statistics.median(s["worker"]["queued_s"] for s in segs), 3),
                         "workers_used": len({s["worker"]["worker"] for s in segs}),
                         "max_loads_per_worker": max(s["worker"]["engine_loads_in_process"] for s in segs)})
            base = rows[0]["lipsync_stage_s"] * rows[0]["workers"]
            rows[-1]["speedup_vs_1"] = round(base / rows[-1]["lipsync_stage_s"], 2)
            print(json.dumps(rows[-1]), flush=True)
        for w in workers:
            stop(w)
    finally:
        stop(server)
    report(rows, args)
    return 0


def segment_overheads(segs: list[dict]) -> list[float]:
    """Per segment: seconds spent on anything but the engine and waiting for a busy worker = (worker start −
    max(submitted, that worker's previous finish)) + (worker wall − engine seconds) + (result in the job's hand −
    worker finish)."""
    out = []
    by_worker: dict[str, list[dict]] = {}
    for s in segs:
        by_worker.setdefault(s["worker"]["worker"], []).append(s)
    for runs in by_worker.values():
        previous_finish = 0.0
        for s in sorted(runs, key=lambda r: r["worker"]["started_at"]):
            w = s["worker"]
            dispatch = w["started_at"] - max(w["submitted_at"], previous_finish)
            out.append(max(0.0, dispatch) + (w["wall_s"] - s["seconds"]) + (w["collected_at"] - w["finished_at"]))
            previous_finish = w["finished_at"]
    return out


def report(rows: list[dict], args) -> None:
    lines = [f"\n## orchestration — {dt.date.today().isoformat()}",
             f"- command: `python bench/orchestration.py --workers {args.workers} --seconds-per-frame "
             f"{args.seconds_per_frame}` (engine: bench-fixed-cost, BENCH-ONLY, {args.seconds_per_frame} s/frame; "
             "local store; real Prefect server; `lipline gpu-worker` task workers)",
             f"- machine: {platform.machine()}, {os.cpu_count()} cores, no GPU",
             "",
             "| GPU workers | segments | workers used | max loads/worker | lip-sync stage s | speed-up vs 1 "
             "| overhead median s | overhead max s | queued median s | job wall s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['segments']} | {r['workers_used']} | {r['max_loads_per_worker']} | "
                     f"{r['lipsync_stage_s']} | {r.get('speedup_vs_1', 1.0)} | {r['overhead_median_s']} | "
                     f"{r['overhead_max_s']} | {r['queued_median_s']} | {r['job_wall_s']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(ROOT / "bench" / "RESULTS.md", "a") as f:
        f.write(text)


if __name__ == "__main__":
    raise SystemExit(main())
