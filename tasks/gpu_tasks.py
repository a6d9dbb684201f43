"""The GPU side of a job as Prefect background tasks, served by long-lived GPU workers (`lipline gpu-worker`).

A GPU worker is one process per GPU (``CUDA_VISIBLE_DEVICES`` pins it) running Prefect's task worker for
`lipsync_on_gpu` with ``limit=1``: it loads the model on its first segment and keeps it for every segment and
job it serves. `localize` submits one background task run per segment (`gpu_dispatch.TaskWorkers`), so every
connected GPU worker takes segments as soon as it is free. Workers started with ``--large`` serve
`lipsync_on_large_gpu` instead: the segments whose out-of-memory ladder ran out on a normal GPU.

Results cross machines only through the store: the task writes ``<job>/work/synced/segment-NNNN.json`` (its
`EngineResult`, whose frames lie in the store's result cache) and, on failure, ``segment-NNNN.error.json``;
before it starts it writes ``segment-NNNN.started.json`` naming its worker, so the job can tell a worker that
died from one that is still busy.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from lipline.errors import InsufficientGPUMemory
from lipline.models.registry import engine_loads
from lipline.records import LipsyncOptions, Segment
from lipline.store import Store
from lipline.tasks.lipsync import sync_segment
from lipline.tasks.segment_results import SegmentResults


def worker_id() -> str:
    """The id Prefect's task worker registers with (host-pid): the job asks the API whether it is still there."""
    return f"{socket.gethostname()}-{os.getpid()}"


def marker(job_id: str, index: int, kind: str = "") -> str:
    """Store key of a segment's hand-off record: ``result`` (kind ""), ``started`` or ``error``."""
    return f"{job_id}/work/synced/segment-{index:04d}{'.' + kind if kind else ''}.json"


def _task_run_id() -> str | None:
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    return str(ctx.task_run.id) if ctx and ctx.task_run else None


def abandoned_marker(job_id: str, task_run_id: str) -> str:
    """Store key the job writes when it gave a task run up (its worker died): that run must not do the work."""
    return f"{job_id}/work/synced/abandoned-{task_run_id}.json"


def say(message: str) -> None:
    """One line on the worker's stderr (not through Prefect's print capture: the worker's own log)."""
    sys.stderr.write(f"lipline gpu-worker {worker_id()}: {message}\n")
    sys.stderr.flush()


def run_on_worker(segment: Segment, engine: str, options: LipsyncOptions, store_root: str, job_id: str,
                  submitted_at: float, recompute: bool, pool: str) -> str | None:
    """Lip-sync one segment on this worker; returns the store URI of its result record (None for a run the
    job gave up on: another run does that segment)."""
    started = time.time()
    store = Store.from_settings(store_root)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "worker": worker_id(), "pool": pool,
          "task_run": _task_run_id()}
    if me["task_run"] and store.exists(abandoned_marker(job_id, me["task_run"])):
        say(f"job {job_id} segment {segment.index}: skipped (resubmitted elsewhere)")
        return None
    store.put_json({**me, "started_at": started}, marker(job_id, segment.index, "started"))
    workdir = Path(tempfile.mkdtemp(prefix=f"lipline-gpu-{segment.index:04d}-"))
    try:
        result = sync_segment(segment, engine, workdir, options, cache=SegmentResults(store), recompute=recompute)
        if result.uri.startswith(str(workdir)):  # written, not cached (no content key): publish it to the job
            result = result.model_copy(update={"uri": store.put_file(Path(result.uri), marker(job_id, segment.index)
                                                                      .replace(".json", ".mp4")).uri})
    except InsufficientGPUMemory as exc:
        store.put_json({**me, "type": "InsufficientGPUMemory", "message": str(exc), "rungs": exc.rungs},
                       marker(job_id, segment.index, "error"))
        raise
    except Exception as exc:
        store.put_json({**me, "type": type(exc).__name__, "message": str(exc)}, marker(job_id, segment.index, "error"))
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    finished = time.time()
    say(f"job {job_id} segment {segment.index}: {'reused' if result.reused else 'engine ran'} "
        f"({finished - started:.2f} s)")
    worker = {**me, "queued_s": round(max(0.0, started - submitted_at), 3), "engine_s": result.seconds,
              "wall_s": round(finished - started, 3), "started_at": started, "finished_at": finished,
              "engine_loads_in_process": engine_loads(engine)}
    result = result.model_copy(update={"worker": worker})
    return store.put_json(result.model_dump(mode="json"), marker(job_id, segment.index)).uri


@task(name="lipsync-on-gpu", cache_policy=NO_CACHE)
def lipsync_on_gpu(segment: Segment, engine: str, options: LipsyncOptions, store_root: str, job_id: str,
                   submitted_at: float, recompute: bool = False) -> str | None:
    """One segment on a GPU worker (served by `lipline gpu-worker`)."""
    return run_on_worker(segment, engine, options, store_root, job_id, submitted_at, recompute, "gpu")


@task(name="lipsync-on-large-gpu", cache_policy=NO_CACHE)
def lipsync_on_large_gpu(segment: Segment, engine: str, options: LipsyncOptions, store_root: str, job_id: str,
                         submitted_at: float, recompute: bool = False) -> str | None:
    """One segment that ran out of GPU memory elsewhere, on a large-GPU worker (`lipline gpu-worker --large`)."""
    return run_on_worker(segment, engine, options, store_root, job_id, submitted_at, recompute, "gpu-large")


def serve(large: bool = False) -> None:
    """Serve segments until interrupted: one at a time (one GPU per worker), the model kept loaded."""
    from prefect.task_worker import serve as prefect_serve

    prefect_serve(lipsync_on_large_gpu if large else lipsync_on_gpu, limit=1)
