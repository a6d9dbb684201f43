"""Archive a finished job to the store: deliverables and sidecars first, `manifest.json` last.

`manifest.json` is the only "complete" marker. A failed job leaves `status.json` with its reasons and none of
the job's outputs (`final.mp4`, sidecars, `manifest.json`, `work/`); a delete the store refuses is reported in
`status.json` and the log, and never replaces the job's own error.

Store outages: every store operation of the archive is retried while the store's error is transient (connection
refused/reset, timeouts, HTTP 5xx, S3 SlowDown/InternalError), with backoff (1, 2, 4, 8, then every 10 s), until
the store has failed for `RETRY_BUDGET_S` (120 s) without one operation going through; then the job fails with a
`StoreError` naming the outage. Deterministic errors (403/credentials, a missing bucket, any other 4xx) are never
retried; a checksum mismatch is retried once, at once. Each object goes up whole or not at all (see `Store.put_file`),
so a retried upload simply writes it again; `manifest.json` still goes up only after every output is verified.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prefect import task

from lipline.errors import LiplineError, StoreError, ValidationFailed, one_line
from lipline.store import Store, StoredFile

DELIVERABLE = "final.mp4"
OUTPUTS = ("manifest.json", DELIVERABLE, "final.srt", "final.vtt", "report.html")  # what a completed job holds; marker first
log = logging.getLogger("lipline.archive")

RETRY_BUDGET_S = 120.0  # how long the archive waits for a store that fails (no operation going through)
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 10.0)  # waits between attempts; the last one repeats
TRANSIENT, CHECKSUM = "transient", "checksum"
_TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
                    "ThrottlingException", "RequestLimitExceeded"}
_CHECKSUM_CODES = {"BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest"}
_TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EHOSTUNREACH,
                     errno.ENETUNREACH, errno.ENETDOWN, errno.EPIPE}


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_network_error(exc: BaseException) -> bool:
    """A connection that could not be made, broke or timed out (Python's, aiohttp's or botocore's words for it)."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError
    except ImportError:  # pragma: no cover - botocore comes with s3fs
        return False
    return isinstance(exc, (BotoConnectionError, HTTPClientError))


def store_error_kind(exc: BaseException) -> str | None:
    """`TRANSIENT` for an error a later attempt may not meet (the store unreachable, a timeout, a 5xx answer),
    `CHECKSUM` for stored bytes that did not match, None for anything deterministic (403, 404, bad request...).
    The exception and its causes are looked at outermost first; the first that answers decides."""
    for cause in _causes(exc):
        if isinstance(cause, StoreError) and "checksum mismatch" in str(cause):
            return CHECKSUM
        response = getattr(cause, "response", None)
        if isinstance(response, dict) and ("Error" in response or "ResponseMetadata" in response):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if code in _CHECKSUM_CODES:
                return CHECKSUM
            return TRANSIENT if code in _TRANSIENT_CODES or status >= 500 else None  # the server answered
        if _is_network_error(cause):
            return TRANSIENT
    return None


@dataclass
class StoreRetry:
    """Runs store operations through an outage: transient errors are retried with backoff until the store has
    failed for `budget_s` without one operation going through (the clock restarts after each success); a checksum
    mismatch is retried once; anything else is raised at once."""

    budget_s: float = RETRY_BUDGET_S
    backoff_s: tuple[float, ...] = BACKOFF_S
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    failing_since: float | None = field(default=None, init=False)
    failures: int = field(default=0, init=False)

    def call(self, what: str, operation: Callable, *args):
        mismatches = 0
        while True:
            started = self.clock()
            try:
                result = operation(*args)
            except Exception as exc:
                kind = store_error_kind(exc)
                if kind == CHECKSUM and mismatches == 0:
                    mismatches += 1
                    _warn("archive: %s: %s; trying once more", what, one_line(exc))
                    continue
                if kind != TRANSIENT:
                    raise
                self._wait_or_give_up(what, exc, started)
            else:
                self.failing_since, self.failures = None, 0
                return result

    def _wait_or_give_up(self, what: str, exc: Exception, attempt_started: float) -> None:
        now = self.clock()
        if self.failing_since is None:
            self.failing_since = attempt_started  # an attempt against a dead endpoint takes seconds to fail
        delay = self.backoff_s[min(self.failures, len(self.backoff_s) - 1)]
        self.failures += 1
        failing_for = now - self.failing_since
        if failing_for + delay > self.budget_s:
            raise StoreError(f"the store kept failing for {failing_for:.0f} s ({self.failures} attempts) while "
                             f"archiving ({what}): {one_line(exc)}; nothing of the job was delivered: check the "
                             "store and run the job again") from exc
        _warn("archive: %s failed (%s); store unavailable for %.0f s, retrying in %.0f s", what, one_line(exc),
              failing_for, delay)
        self.sleep(delay)


def _warn(message: str, *args) -> None:
    """To the flow run's log (Prefect UI, the CLI's console) when in a run, else to this module's logger."""
    try:
        from prefect import get_run_logger

        get_run_logger().warning(message, *args)
    except Exception:  # noqa: BLE001 - outside a Prefect run
        log.warning(message, *args)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def archive_outputs(store: Store, job_id: str, files: dict[str, Path], manifest: dict,
                    retry: StoreRetry | None = None) -> dict[str, StoredFile]:
    """Upload `files` ({name in the job folder: local path}), then the manifest with their SHA-256s, each store
    operation through `retry` (default: `StoreRetry()`, 120 s of outage).

    Returns the stored records by name (the manifest included). On any failure every file of this archive is
    removed (deliverable and sidecars); the original error propagates, a refused delete is logged beside it.
    """
    retry = retry or StoreRetry()
    stored: dict[str, StoredFile] = {}
    try:
        for name, path in files.items():
            stored[name] = retry.call(f"upload of {name}", store.put_file, path, f"{job_id}/{name}")
        manifest = {**manifest, "completed_at": now_iso(),
                    "outputs": {name: {"uri": s.uri, "sha256": s.sha256, "bytes": s.size} for name, s in stored.items()}}
        for stale in ("status.json", *(n for n in OUTPUTS if n not in files and n != "manifest.json")):
            # an earlier run's record or sidecar goes before the completion marker
            retry.call(f"removal of an old {stale}", store.delete, f"{job_id}/{stale}")
        stored["manifest.json"] = retry.call("upload of manifest.json", store.put_json, manifest,
                                             f"{job_id}/manifest.json")
    except BaseException:
        remove_quietly(store, [f"{job_id}/{name}" for name in ("manifest.json", *files)])
        raise
    return stored


@task(name="archive", description="Upload the deliverable and sidecars with SHA-256 checks; manifest.json last; "
                                  "store outages retried for up to 2 min")
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
