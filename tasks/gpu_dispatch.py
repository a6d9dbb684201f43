"""How a job's segments reach the lip-sync engine — one resource chosen by configuration (``LIPLINE_GPU_BACKEND``).

* ``in-process`` (default on one machine): this process runs the engine, one task run per segment.
* ``task-workers``: one Prefect background task run per segment, served by long-lived GPU workers
  (`lipline gpu-worker`, `tasks/gpu_tasks.py`); every free worker takes the next segment, the model stays loaded
  between segments and jobs; a segment that runs out of memory goes to ``--large`` workers when
  ``LIPLINE_GPU_LARGE`` says there are some; a segment whose worker died is resubmitted.
* ``deployment``: all segments in one child flow run of ``LIPLINE_GPU_DEPLOYMENT`` on the ``gpu`` work pool (a
  process worker: a fresh process, and a model load, per run).

Every backend reuses finished segment results from the store (`tasks/segment_results.py`) and returns the
results in segment order whatever order they finished in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

from lipline.errors import DeploymentNotFound, EngineError, InsufficientGPUMemory, StoreError
from lipline.records import EngineResult, LipsyncOptions, Segment
from lipline.settings import get_settings
from lipline.store import Store
from lipline.tasks import lipsync
from lipline.tasks.segment_results import SegmentResults
from lipline.uris import to_path


@dataclass
class HandOff:
    """What the lip-sync stage of one job hands to a backend."""

    job_id: str
    store: Store
    workdir: Path
    segments: list[Segment]
    engine: str
    options: LipsyncOptions
    recompute: bool = False
    progress: Callable[[float], None] = field(default=lambda fraction: None)

    def share(self) -> list[Segment]:
        """The segments with their files in the store (``<job>/work/segments/``), each file uploaded once."""
        uploaded: dict[str, str] = {}

        def shared(uri: str | None) -> str | None:
            if uri is None:
                return None
            if uri not in uploaded:
                key = f"{self.job_id}/work/segments/{Path(uri).name}"
                uploaded[uri] = self.store.put_file(to_path(uri), key).uri
            return uploaded[uri]

        return [s.model_copy(update={"video_uri": shared(s.video_uri), "audio_uri": shared(s.audio_uri),
                                     "face_track_uri": shared(s.face_track_uri)}) for s in self.segments]


class InProcess:
    """The engine in this process (one task run per segment)."""

    def run(self, job: HandOff) -> list[EngineResult]:
        return lipsync.lipsync_segments(job.segments, job.engine, job.workdir / "synced", job.options,
                                        on_progress=job.progress, cache=SegmentResults(job.store),
                                        recompute=job.recompute)


class Deployment:
    """All segments in one child flow run of the GPU deployment (``LIPLINE_GPU_DEPLOYMENT``)."""

    def __init__(self, name: str | None) -> None:
        if not name:
            raise EngineError("LIPLINE_GPU_BACKEND=deployment needs LIPLINE_GPU_DEPLOYMENT (e.g. "
                              "lipsync-segments/gpu)")
        self.name = name

    def run(self, job: HandOff) -> list[EngineResult]:
        from prefect.deployments import run_deployment
        from prefect.exceptions import ObjectNotFound

        from lipline.flows.lipsync import RESULTS_NAME, read_results

        out_prefix = job.store.uri(f"{job.job_id}/work/synced")
        try:
            # the key: a create the client resends after a lost answer returns this run (no second GPU run)
            parameters = {"segments": [s.model_dump(mode="json") for s in job.share()], "engine": job.engine,
                          "out_prefix": out_prefix, "options": job.options.model_dump(mode="json"),
                          "store_root": job.store.root, "recompute": job.recompute}
            run = run_deployment(self.name, timeout=None, parameters=parameters,
                                 idempotency_key=f"lipline-gpu-{job.job_id}-{uuid4().hex}")
        except (ObjectNotFound, ValueError) as exc:
            raise DeploymentNotFound(f"LIPLINE_GPU_DEPLOYMENT={self.name!r}: no such deployment in the Prefect API "
                                     f"({type(exc).__name__}); set it to FLOW/DEPLOYMENT as `prefect deployment ls` "
                                     "lists it (e.g. lipsync-segments/gpu), or unset it to lip-sync in this "
                                     "process") from exc
        if not run.state or not run.state.is_completed():
            raise EngineError(f"GPU flow run {run.name} ({self.name}) ended "
                              f"{run.state.name if run.state else 'unknown'}: {run.state.message if run.state else ''}")
        return read_results(f"{out_prefix}/{RESULTS_NAME}", job.workdir)


class NoGPUWorker(EngineError):
    """No task worker served the job's lip-sync task for ``LIPLINE_GPU_WAIT_S`` seconds."""


@dataclass
class _Submitted:
    segment: Segment
    task_run_id: str
    large: bool
    submitted_at: float


class TaskWorkers:
    """One background task run per segment, served by `lipline gpu-worker` processes (see the module doc)."""

    poll_s = 0.5
    check_s = 2.0  # how often workers' liveness is checked
    unrecorded_limit_s = 120.0  # a submitted run the API still does not know after this is an error
    lost_grace_s = 10.0  # a worker missing from the API this long is dead (a websocket reconnect is shorter)
    wait_log_s = 30.0  # while no worker serves the job's task: a "waiting" line this often (at most)

    def __init__(self, large_pool: bool, wait_s: float = 600.0) -> None:
        self.large_pool = large_pool
        self.wait_s = wait_s  # no worker serving the job's task this long: the job fails (LIPLINE_GPU_WAIT_S)
        self._served_at = self._logged_at = time.monotonic()
        self._seen: set[str] = set()     # worker ids seen in the API during this job
        self._gone: dict[str, float] = {}  # worker id -> when it was first missed
        self._handled: set[str] = set()  # deaths already recovered from
        self._last_check = 0.0

    def run(self, job: HandOff) -> list[EngineResult]:
        from prefect import get_run_logger
        from prefect.client.orchestration import get_client

        shared = job.share()
        results: dict[int, EngineResult] = {}
        with get_client(sync_client=True) as client:
            self._seen = set(self._active_workers(client))
            self._served_at = self._logged_at = time.monotonic()
            if not self._seen:
                get_run_logger().warning("no GPU worker is connected to %s: the segments wait until one starts "
                                         "(`lipline gpu-worker`)", client.api_url)
            pending: dict[int, _Submitted] = {}
            try:
                for s in shared:
                    pending[s.index] = self._submit(job, s, large=False)
                self._collect(client, job, shared, pending, results)
            except BaseException:
                self._cancel(client, pending.values())  # the job failed: its other segments are not wanted
                raise
        return [results[s.index] for s in shared]

    def _collect(self, client, job: HandOff, shared: list[Segment], pending: dict[int, _Submitted],
                 results: dict[int, EngineResult]) -> None:
        """Wait for every submitted segment, resubmitting those whose worker died or that need a large GPU."""
        total = sum(s.frame_count for s in shared) or 1
        self._served_at = self._logged_at = time.monotonic()  # the wait counts from when all are queued
        while pending:
            for index, sub in list(pending.items()):
                state = self._state(client, sub)
                if state is None and time.time() - sub.submitted_at > self.unrecorded_limit_s:
                    raise EngineError(f"segment {index}: the Prefect API at {client.api_url} has no record of its "
                                      f"task run {sub.task_run_id} {self.unrecorded_limit_s:.0f} s after submission")
                if state is None or not state.is_final():
                    continue
                if state.is_completed():
                    results[index] = self._collected(job, sub)
                    del pending[index]
                    job.progress(sum(results[i].frames or shared[i].frame_count for i in results) / total)
                else:
                    pending[index] = self._after_failure(job, sub, state)
            if pending:
                self._recover(client, job, pending)
                time.sleep(self.poll_s)

    @staticmethod
    def _state(client, sub: _Submitted):
        """The task run's state; None while the API has not recorded the run yet (`delay` creates it through
        Prefect's event stream, a moment after it returns)."""
        from prefect.exceptions import ObjectNotFound

        try:
            return client.read_task_run(sub.task_run_id).state
        except ObjectNotFound:
            return None

    @staticmethod
    def _collected(job: HandOff, sub: _Submitted) -> EngineResult:
        """The segment's result record from the store, with when the job submitted it and had it back (epoch s;
        with the worker's started/finished times they give the orchestration overhead, bench/orchestration.py)."""
        from lipline.tasks import gpu_tasks

        result = EngineResult(**job.store.read_json(gpu_tasks.marker(job.job_id, sub.segment.index)))
        worker = {**result.worker, "submitted_at": sub.submitted_at, "collected_at": time.time()}
        return result.model_copy(update={"worker": worker})

    def _submit(self, job: HandOff, segment: Segment, *, large: bool) -> _Submitted:
        from lipline.tasks import gpu_tasks

        served = gpu_tasks.lipsync_on_large_gpu if large else gpu_tasks.lipsync_on_gpu
        now = time.time()
        for kind in ("", "started", "error"):  # a resubmitted segment starts from a clean slate
            job.store.delete(gpu_tasks.marker(job.job_id, segment.index, kind))
        future = served.delay(segment, job.engine, job.options, job.store.root, job.job_id, now, job.recompute)
        return _Submitted(segment, str(future.task_run_id), large, now)

    def _after_failure(self, job: HandOff, sub: _Submitted, state) -> _Submitted:
        """Route an exhausted out-of-memory ladder to the large workers once; anything else fails the job."""
        from lipline.tasks import gpu_tasks

        try:
            error = job.store.read_json(gpu_tasks.marker(job.job_id, sub.segment.index, "error"))
        except (StoreError, OSError, ValueError):
            error = {"type": state.name, "message": state.message or ""}
        where = f"segment {sub.segment.index} on {error.get('worker', 'a GPU worker')}"
        if error.get("type") == "InsufficientGPUMemory":
            if self.large_pool and not sub.large:
                return self._submit(job, sub.segment, large=True)
            advice = ("no large-GPU workers are configured (start `lipline gpu-worker --large` on a bigger GPU and "
                      "set LIPLINE_GPU_LARGE=true)" if not sub.large else "even the large-GPU worker ran out")
            rungs = error.get("rungs", [])
            raise InsufficientGPUMemory(f"{where}: out of GPU memory after the ladder's rungs "
                                        f"[{', '.join(rungs)}]: {error['message']}; {advice}", rungs)
        raise EngineError(f"{where} failed: {error.get('type')}: {error.get('message')}")

    @staticmethod
    def _active_workers(client) -> dict[str, set[str]]:
        """The task workers connected to the API now: {worker id: the task keys it serves}."""
        return {w["identifier"]: set(w.get("task_keys") or ())
                for w in client.request("POST", "/task_workers/filter", json={}).json()}

    def _watch_waiting(self, active: dict[str, set[str]], pending: dict[int, _Submitted], now: float) -> None:
        """Fail the job once no connected worker has served a task it waits for during `wait_s`; meanwhile log a
        line every `wait_log_s` (at most half the wait) so the run says why it does not move."""
        from prefect import get_run_logger

        from lipline.tasks import gpu_tasks

        tasks = {gpu_tasks.lipsync_on_large_gpu if sub.large else gpu_tasks.lipsync_on_gpu for sub in pending.values()}
        served = set().union(*active.values()) if active else set()
        if any(t.task_key in served for t in tasks):
            self._served_at = self._logged_at = now
            return
        names = " or ".join(sorted(t.name for t in tasks))
        idle = now - self._served_at
        if idle > self.wait_s:
            large = " --large" if all(sub.large for sub in pending.values()) else ""
            raise NoGPUWorker(f"no GPU worker has served {names} for {self.wait_s:.0f} s ({len(pending)} segment(s) "
                              f"still queued); start one with `lipline gpu-worker{large}` (PREFECT_API_URL="
                              f"{client_url()}, same store), or raise LIPLINE_GPU_WAIT_S")
        if now - self._logged_at >= min(self.wait_log_s, self.wait_s / 2):
            self._logged_at = now
            get_run_logger().warning("waiting for a GPU worker: %d segments queued, none served for %.0f s "
                                     "(the job fails after %.0f s: LIPLINE_GPU_WAIT_S)", len(pending), idle,
                                     self.wait_s)

    def _recover(self, client, job: HandOff, pending: dict[int, _Submitted]) -> None:
        """Every `check_s`: a worker that started one of our segments, or that was serving when the job looked,
        and has been missing from the API for `lost_grace_s` is dead (each death handled once). Its running
        segment, and every segment not started yet (the dead worker may hold one it took but had not started),
        are given up and resubmitted to the live workers."""
        from lipline.tasks import gpu_tasks

        now = time.monotonic()
        if now - self._last_check < self.check_s:
            return
        self._last_check = now
        started: dict[int, dict | None] = {}
        for index in pending:
            try:
                started[index] = job.store.read_json(gpu_tasks.marker(job.job_id, index, "started"))
            except (StoreError, OSError, ValueError):
                started[index] = None
        serving = self._active_workers(client)
        self._watch_waiting(serving, pending, now)
        active = set(serving)
        for gone in (self._seen | {m["worker"] for m in started.values() if m}) - active:
            self._gone.setdefault(gone, now)
        for back in active:
            self._gone.pop(back, None)
        self._seen |= active
        dead = {w for w, since in self._gone.items() if now - since > self.lost_grace_s} - self._handled
        if not dead:
            return
        self._handled |= dead
        for index, sub in list(pending.items()):
            if started[index] is None or started[index].get("worker") in dead:
                self._abandon(client, job, sub, f"GPU worker {', '.join(sorted(dead))} is gone")
                pending[index] = self._submit(job, sub.segment, large=sub.large)

    @staticmethod
    def _cancel(client, subs) -> None:
        from prefect.states import Cancelled

        for sub in subs:
            try:
                state = TaskWorkers._state(client, sub)
                if state is not None and not state.is_final():
                    client.set_task_run_state(sub.task_run_id, Cancelled(message="Lipline: the job failed"),
                                              force=True)
            except Exception:  # noqa: BLE001 - best effort: the job's own error is what the caller raises
                pass

    @staticmethod
    def _abandon(client, job: HandOff, sub: _Submitted, why: str) -> None:
        """Give a task run up: a marker in the store tells any worker that still gets it not to do the work (a
        dead worker may have held it undelivered), and its state says Crashed in the UI."""
        from prefect.states import Crashed

        from lipline.tasks import gpu_tasks

        job.store.put_json({"task_run": sub.task_run_id, "segment": sub.segment.index, "why": why},
                           gpu_tasks.abandoned_marker(job.job_id, sub.task_run_id))
        client.set_task_run_state(sub.task_run_id, Crashed(message=f"Lipline: {why}; segment resubmitted"),
                                  force=True)


def client_url() -> str:
    """The Prefect API this process uses (for messages)."""
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url)


def gpu_backend() -> InProcess | Deployment | TaskWorkers:
    """The backend the settings ask for (``LIPLINE_GPU_BACKEND``; ``auto``: deployment when
    ``LIPLINE_GPU_DEPLOYMENT`` is set, else in-process)."""
    settings = get_settings()
    name = settings.gpu_backend
    if name == "auto":
        name = "deployment" if settings.gpu_deployment else "in-process"
    factories: dict[str, Callable[[], InProcess | Deployment | TaskWorkers]] = {
        "in-process": InProcess,
        "deployment": lambda: Deployment(settings.gpu_deployment),
        "task-workers": lambda: TaskWorkers(settings.gpu_large, settings.gpu_wait_s),
    }
    return factories[name]()
