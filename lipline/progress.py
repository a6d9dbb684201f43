"""Progress of long work: a Prefect progress artifact for the UI and, in the CLI, a local listener (rich bar)."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator

Listener = Callable[[str, float], None]  # (stage description, fraction 0..1 of the whole job)
_listeners: list[Listener] = []
_lock = threading.Lock()


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


class ProgressArtifact:
    """One Prefect progress artifact, created on the first report inside a run and updated at most once a second
    (the last report, and any report passed with ``force``, always goes through: each update is a request the
    Prefect server handles, and the UI polls far less often). Outside a run, or if the API refuses, reports are
    dropped: progress is informative and never fails a job."""

    def __init__(self, key: str, description: str, min_interval_s: float = 1.0) -> None:
        self.key = re.sub(r"[^a-z0-9-]+", "-", key.lower())[:64]
        self.description, self.min_interval_s = description, min_interval_s
        self.artifact_id = None
        self.last = float("-inf")
        self.published = 0  # reports that went through to the API (or were tried)

    def __call__(self, fraction: float, force: bool = False) -> None:
        now = time.monotonic()
        if fraction < 1.0 and not force and now - self.last < self.min_interval_s:
            return
        self.last = now
        self.published += 1
        try:
            from prefect.artifacts import create_progress_artifact, update_progress_artifact
            from prefect.context import FlowRunContext

            if FlowRunContext.get() is None:
                return
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(progress=100 * fraction, key=self.key,
                                                            description=self.description)
            else:
                update_progress_artifact(self.artifact_id, progress=100 * fraction)
        except (ImportError, RuntimeError, ValueError):
            pass


class JobProgress:
    """Maps stage-local progress onto the whole job and publishes it (artifact + local listeners)."""

    STAGES = {"validate": 0.05, "normalize": 0.12, "faces": 0.05, "segment": 0.08, "lipsync": 0.35, "quality": 0.05,
              "merge": 0.03, "post": 0.22, "archive": 0.05}

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.done: dict[str, float] = {}
        self.artifact = ProgressArtifact(f"progress-{job_id}", f"Lipline job {job_id}")

    def update(self, stage: str, fraction: float = 1.0) -> None:
        """Local listeners get every report; the artifact at most one a second within a stage, and each stage's
        end (the UI never stays behind a finished stage while a long one runs)."""
        self.done[stage] = max(0.0, min(1.0, fraction))
        total = sum(self.STAGES[s] * f for s, f in self.done.items())
        for listener in list(_listeners):
            listener(stage, total)
        self.artifact(total, force=self.done[stage] >= 1.0)
