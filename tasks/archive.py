"""Archive a finished job to the store: deliverables and sidecars first, `manifest.json` last.

`manifest.json` is the only "complete" marker. A failed job leaves `status.json` with its reasons and none of
the job's outputs (`final.mp4`, sidecars, `manifest.json`, `work/`); a delete the store refuses is reported in
`status.json` and the log, and never replaces the job's own error.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from prefect import task

from lipline.errors import LiplineError, ValidationFailed, one_line
from lipline.store import Store, StoredFile

DELIVERABLE = "final.mp4"
OUTPUTS = ("manifest.json", DELIVERABLE, "final.srt", "final.vtt")  # what a completed job holds; marker first
log = logging.getLogger("lipline.archive")


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def archive_outputs(store: Store, job_id: str, files: dict[str, Path], manifest: dict) -> dict[str, StoredFile]:
    """Upload `files` ({name in the job folder: local path}), then the manifest with their SHA-256s.

    Returns the stored records by name (the manifest included). On any failure every file of this archive is
    removed (deliverable and sidecars); the original error propagates, a refused delete is logged beside it.
    """
    stored: dict[str, StoredFile] = {}
    try:
        for name, path in files.items():
            stored[name] = store.put_file(path, f"{job_id}/{name}")
        manifest = {**manifest, "completed_at": now_iso(),
                    "outputs": {name: {"uri": s.uri, "sha256": s.sha256, "bytes": s.size} for name, s in stored.items()}}
        for stale in ("status.json", *(n for n in OUTPUTS if n not in files and n != "manifest.json")):
            store.delete(f"{job_id}/{stale}")  # an earlier run's record or sidecar goes before the completion marker
        stored["manifest.json"] = store.put_json(manifest, f"{job_id}/manifest.json")
    except BaseException:
        remove_quietly(store, [f"{job_id}/{name}" for name in ("manifest.json", *files)])
        raise
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


def remove_quietly(store: Store, keys: list[str], *, prefixes: tuple[str, ...] = ()) -> list[str]:
    """Delete `keys` (and everything under `prefixes`) for a failed job; never raises. Returns (and logs) what
    the store refused, one line each."""
    problems: list[str] = []
    for key, recursive in [*((k, False) for k in keys), *((p, True) for p in prefixes)]:
        try:
            store.delete_prefix(key) if recursive else store.delete(key)
        except Exception as exc:  # noqa: BLE001 - the job's own error is what the caller raises
            problems.append(one_line(exc))
            log.warning("cleanup of a failed job: %s", one_line(exc))
    return problems


def record_failure(store: Store, job_id: str, exc: BaseException, stage: str | None) -> list[str]:
    """Remove the job's outputs and intermediates (`work/`) and leave `status.json` with the reasons. Never
    raises (the store itself may be what failed: the caller re-raises the job's own error); returns the store
    problems met, which are also logged and, when `status.json` can be written, listed in it."""
    problems = remove_quietly(store, [f"{job_id}/{name}" for name in OUTPUTS], prefixes=(f"{job_id}/work",))
    status = failure_status(job_id, exc, stage)
    if problems:
        status["cleanup_errors"] = problems
    try:
        store.put_json(status, f"{job_id}/status.json")
    except Exception as put_exc:  # noqa: BLE001 - same: never replaces the job's error
        problems.append(f"status.json not written: {one_line(put_exc)}")
        log.warning("failed job %s: status.json not written: %s", job_id, one_line(put_exc))
    return problems
