"""Archive a finished job to the store: deliverables and sidecars first, `manifest.json` last.

`manifest.json` is the only "complete" marker. A failed job leaves `status.json` with its reasons and no
`final.mp4` (a partially uploaded deliverable is removed).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from prefect import task

from lipline.errors import LiplineError, ValidationFailed
from lipline.store import Store, StoredFile

DELIVERABLE = "final.mp4"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def archive_outputs(store: Store, job_id: str, files: dict[str, Path], manifest: dict) -> dict[str, StoredFile]:
    """Upload `files` ({name in the job folder: local path}), then the manifest with their SHA-256s.

    Returns the stored records by name (the manifest included). On any failure the deliverable is removed.
    """
    stored: dict[str, StoredFile] = {}
    try:
        for name, path in files.items():
            stored[name] = store.put_file(path, f"{job_id}/{name}")
        manifest = {**manifest, "completed_at": now_iso(),
                    "outputs": {name: {"uri": s.uri, "sha256": s.sha256, "bytes": s.size} for name, s in stored.items()}}
        stored["manifest.json"] = store.put_json(manifest, f"{job_id}/manifest.json")
    except BaseException:
        store.delete(f"{job_id}/{DELIVERABLE}")
        raise
    store.delete(f"{job_id}/status.json")
    return stored


@task(name="archive", description="Upload the deliverable and sidecars with SHA-256 checks; manifest.json last")
def archive(store: Store, job_id: str, files: dict[str, Path], manifest: dict) -> dict[str, StoredFile]:
    return archive_outputs(store, job_id, files, manifest)


def failure_status(job_id: str, exc: BaseException, stage: str | None) -> dict:
    """What `status.json` says about a failed job: which stage, what went wrong, what to do."""
    status = {"job_id": job_id, "status": "failed", "stage": stage, "failed_at": now_iso(),
              "error_type": type(exc).__name__, "reasons": [str(exc)]}
    if isinstance(exc, ValidationFailed):
        status["reasons"] = [f"{r.file} ({r.role}): {v.rule}: observed {v.observed}, expected {v.expected}. {v.hint}"
                             for r in exc.reports for v in r.violations if v.severity == "fail"]
    elif not isinstance(exc, LiplineError):
        status["reasons"].append("internal error: see the flow run's logs in Prefect")
    return status


def record_failure(store: Store, job_id: str, exc: BaseException, stage: str | None) -> None:
    """Best effort: remove any deliverable and leave `status.json` (the store itself may be what failed)."""
    store.delete(f"{job_id}/manifest.json")
    store.delete(f"{job_id}/{DELIVERABLE}")
    try:
        store.put_json(failure_status(job_id, exc, stage), f"{job_id}/status.json")
    except LiplineError:
        pass
