"""Segments fan out over warm GPU workers (`lipline gpu-worker`, Prefect background tasks) on a real Prefect
server: both workers take segments at the same time, each loads its engine once, a re-run reuses every finished
segment, a killed worker's segment is resubmitted, an exhausted out-of-memory ladder goes to a large worker.

The engine is the bench-only `bench-fixed-cost` (a GPU cannot exist here): it copies the frames and takes a
fixed time per frame, so the orchestration is real and the engine cost is known.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lipline import prefect_http
import pytest

from tests.prefect_server import start_prefect_server, stop_processes

pytestmark = pytest.mark.integration
SECONDS_PER_FRAME = "0.03"


class Stack:
    def __init__(self, base: Path, api: str) -> None:
        self.base, self.api = base, api
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LIPLINE_"))}
        self.env.update({"PREFECT_API_URL": api, "PREFECT_HOME": str(base / "prefect-home"),
                         "PREFECT_LOGGING_LEVEL": "WARNING", "LIPLINE_GPU_BACKEND": "task-workers",
                         "LIPLINE_BENCH_SECONDS_PER_FRAME": SECONDS_PER_FRAME})
        self.workers: dict[str, subprocess.Popen] = {}

    def start_worker(self, name: str, *, large: bool = False, extra: dict | None = None) -> subprocess.Popen:
        log = open(self.base / f"{name}.log", "wb")
        args = [sys.executable, "-m", "lipline.cli", "gpu-worker", *(["--large"] if large else [])]
        self.workers[name] = subprocess.Popen(args, env={**self.env, **(extra or {})}, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True)
        return self.workers[name]

    def wait_for_workers(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            active = prefect_http.post(f"{self.api}/task_workers/filter", json={}, timeout=60).json()
            if len(active) >= n:
                return
            for name, proc in self.workers.items():
                assert proc.poll() is None, f"{name} exited:\n{(self.base / f'{name}.log').read_text()[-3000:]}"
            time.sleep(0.5)
        pytest.fail(f"fewer than {n} GPU workers connected after {timeout}s")

    def stop_workers(self, *names: str) -> None:
        stop_processes([self.workers.pop(name) for name in names or list(self.workers)])

    def run(self, media, store: Path, job_id: str, *extra: str, env: dict | None = None,
            wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "lipline.cli", "run", str(media.video), str(media.dub), "--engine",
               "bench-fixed-cost", "--max-segment-s", "2.5", "--store", str(store), "--job-id", job_id, "--quiet",
               *extra]
        if not wait:
            return subprocess.Popen(cmd, env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        return subprocess.run(cmd, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=600)

    def task_runs(self, name: str) -> int:
        r = prefect_http.post(f"{self.api}/task_runs/count", json={"task_runs": {"name": {"like_": name}}}, timeout=60)
        r.raise_for_status()
        return r.json()


def engine_segments(store: Path, job_id: str) -> list[dict]:
    return json.loads((store / job_id / "manifest.json").read_text())["engine"]["segments"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("gpu-workers")
    server = start_prefect_server(base / "prefect-home", base / "server.log")
    s = Stack(base, server.api)
    try:
        yield s
    finally:
        s.stop_workers()
        server.stop()


def test_a_job_no_gpu_worker_serves_fails_after_the_wait_with_one_line_and_nothing_written(stack, media, tmp_path):
    stack.stop_workers()  # first in the module: no worker has connected yet, but be sure
    store = tmp_path / "store"
    t0 = time.monotonic()
    done = stack.run(media, store, "nowait", env={"LIPLINE_GPU_WAIT_S": "4"})
    print(f"no-worker job failed after {time.monotonic() - t0:.0f} s")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    assert "no GPU worker has served lipsync-on-gpu for 4 s" in errors[0] and "`lipline gpu-worker`" in errors[0]
    status = json.loads((store / "nowait" / "status.json").read_text())
    assert status["status"] == "failed" and status["error_type"] == "NoGPUWorker", status
    assert "no GPU worker has served lipsync-on-gpu" in " ".join(status["reasons"])
    assert sorted(p.name for p in (store / "nowait").iterdir()) == ["status.json", "validation.json"]  # no work/
    logs = prefect_http.post(f"{stack.api}/logs/filter", json={"sort": "TIMESTAMP_ASC"}, timeout=30).json()
    waiting = [log["message"] for log in logs if log["message"].startswith("waiting for a GPU worker: ")]
    assert waiting and "segments queued" in waiting[0], [log["message"] for log in logs][-20:]
    runs = prefect_http.post(f"{stack.api}/task_runs/filter", json={"task_runs": {"name": {"like_": "lipsync-on-gpu%"}}},
                      timeout=30).json()
    assert runs and all(r["state_type"] == "CANCELLED" for r in runs), [r["state_type"] for r in runs]


def test_exhausted_memory_ladder_goes_to_the_large_worker(stack, media, tmp_path):
    stack.start_worker("small", extra={"LIPLINE_BENCH_OOM_ABOVE_FRAMES": "40"})
    stack.start_worker("large", large=True)
    stack.wait_for_workers(2)
    try:
        refused = stack.run(media, tmp_path / "store", "oom-nolarge")  # no large pool configured: the job fails
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert "out of GPU memory" in refused.stderr or "LIPLINE_BENCH_OOM_ABOVE_FRAMES" in refused.stderr
        status = json.loads((tmp_path / "store" / "oom-nolarge" / "status.json").read_text())
        assert "bench: simulated out of memory" in " ".join(status["reasons"])  # the ladder's rungs

        done = stack.run(media, tmp_path / "store", "oom", env={"LIPLINE_GPU_LARGE": "true"})
        assert done.returncode == 0, done.stderr
        pools = {s["worker"]["pool"] for s in engine_segments(tmp_path / "store", "oom") if s["frames"] > 40}
        assert pools == {"gpu-large"}
        assert all(s["worker"]["pool"] == "gpu" for s in engine_segments(tmp_path / "store", "oom") if s["frames"] <= 40)
    finally:
        stack.stop_workers("small", "large")


def test_segments_spread_over_warm_workers_and_rerun_reuses_them(stack, media, tmp_path):
    stack.start_worker("w1")
    stack.start_worker("w2")
    stack.wait_for_workers(2)
    store = tmp_path / "store"
    done = stack.run(media, store, "fan")
    assert done.returncode == 0, done.stderr
    segments = engine_segments(store, "fan")
    assert len(segments) >= 5
    assert [s["segment_index"] for s in segments] == list(range(len(segments)))  # ordered back
    workers = {s["worker"]["worker"] for s in segments}
    assert len(workers) == 2, workers  # both GPU workers produced segments
    assert {s["worker"]["engine_loads_in_process"] for s in segments} == {1}  # one model load per worker
    spans = sorted((s["worker"]["started_at"], s["worker"]["finished_at"], s["worker"]["worker"]) for s in segments)
    assert any(a[1] > b[0] and a[2] != b[2] for a, b in zip(spans, spans[1:])), spans  # in flight at once
    assert not any(s["reused"] for s in segments)

    before = stack.task_runs("lipsync-on-gpu%")
    again = stack.run(media, store, "fan", "--replace")
    assert again.returncode == 0, again.stderr
    reused = engine_segments(store, "fan")
    assert all(s["reused"] for s in reused) and [s["cache_key"] for s in reused] == [s["cache_key"] for s in segments]
    assert stack.task_runs("lipsync-on-gpu%") - before == len(segments)  # submitted, answered from the cache

    forced = stack.run(media, store, "fan", "--replace", "--recompute")
    assert forced.returncode == 0, forced.stderr
    assert not any(s["reused"] for s in engine_segments(store, "fan"))


def test_a_killed_worker_costs_at_most_one_segment(stack, media, tmp_path):
    if len(stack.workers) < 2:
        stack.start_worker("w1")
        stack.start_worker("w2")
    stack.wait_for_workers(2)
    store = tmp_path / "store"
    job = stack.run(media, store, "kill", wait=False)
    victim = stack.workers["w1"]
    deadline = time.monotonic() + 300
    started = store / "kill" / "work" / "synced"
    while time.monotonic() < deadline:  # kill w1 in the middle of a segment of its own
        markers = [json.loads(p.read_text()) for p in started.glob("*.started.json")] if started.exists() else []
        if any(m["pid"] == victim.pid for m in markers):
            break
        time.sleep(0.1)
    victim.kill()
    victim.wait()
    stack.workers.pop("w1")
    stack.start_worker("w3")
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, err
    segments = engine_segments(store, "kill")
    assert all(s["worker"]["pid"] != victim.pid for s in segments)
    # engine runs finished: every segment exactly once (the killed worker's unfinished one is the one redone)
    ran = [line for log in stack.base.glob("w*.log") for line in log.read_text().splitlines()
           if "job kill segment" in line and "engine ran" in line]
    assert len(ran) == len(segments), ran
