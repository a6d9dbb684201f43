"""How a batch's rows run and are recorded: the delivered-job check, deployment runs with bounded concurrency,
and the results CSV in the store.

* **Delivered** (`delivered_uri`): ``STORE/<job_id>/manifest.json`` exists (the completion marker, see
  `tasks/archive.py`) and its ``inputs`` record, per role, the SHA-256 of exactly the files the row names now.
* **Deployment runs** (`run_on_deployment`): rows are submitted with ``run_deployment(..., timeout=0)`` while fewer
  than `max_concurrent` are unfinished; the API is polled until each reaches a final state. The idempotency key is
  the batch run's id and the row number, so a retried batch run does not submit a row twice.
* **Results** (`write_results`): ``STORE/batches/<batch_id>/results.csv``, uploaded whole through `Store.put_file`
  (readers never see a partial file).
"""

from __future__ import annotations

import csv
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lipline.errors import LiplineError, one_line
from lipline.params import LocalizeParams
from lipline.store import Store
from lipline.uris import local_path, sha256_file

ROLES = {"video": "video_uri", "audio": "audio_uri", "subtitles": "subtitles_uri", "intro": "intro_uri",
         "outro": "outro_uri"}
RESULT_COLUMNS = ("row", "job_id", "status", "deliverable", "reason", "seconds")
POLL_S = 1.0


@dataclass
class RowOutcome:
    """One manifest row's line in the results: status done / skipped (delivered) / failed / invalid."""

    row: int
    job_id: str
    status: str
    deliverable: str
    reason: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RowRun:
    """A valid row to run: its number, its job parameters, and why it runs again (empty for a new job)."""

    row: int
    params: LocalizeParams
    note: str = ""


def reason_of(exc: BaseException) -> tuple[bool, str]:
    """(expected?, one line): a Lipline or parameter error as it is, anything else with its type."""
    expected = isinstance(exc, (ValidationError, LiplineError))
    text = " ".join(str(exc).split())
    if not expected:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return expected, text[:500]


# ------------------------------------------------------------------------------------------------------ delivered

def _input_hashes(params: LocalizeParams, workdir: Path) -> dict[str, str]:
    out = {}
    for role, field in ROLES.items():
        uri = getattr(params, field)
        if uri:
            out[role] = sha256_file(local_path(uri, workdir))
    return out


def delivered_uri(store: Store, params: LocalizeParams) -> tuple[str | None, str]:
    """(URI of the deliverable, note) when the row's job is delivered from the same inputs; else (None, why it
    runs): "" for a job never delivered, "inputs changed since delivery: ..." or "cannot ..." (an input or the
    manifest cannot be read: the caller keeps the delivered job and reports the row failed)."""
    key = f"{params.job_id}/manifest.json"
    try:
        if not store.exists(key):
            return None, ""
        doc = store.read_json(key)
    except (LiplineError, OSError, ValueError) as exc:
        return None, f"cannot read the delivered {store.uri(key)}: {one_line(exc)[:300]}"
    recorded = {role: entry.get("sha256") for role, entry in (doc.get("inputs") or {}).items()
                if isinstance(entry, dict)}
    try:
        with tempfile.TemporaryDirectory(prefix="lipline-batch-hash-") as tmp:
            current = _input_hashes(params, Path(tmp))
    except (LiplineError, OSError) as exc:
        return None, (f"cannot hash an input to compare with the delivered job ({one_line(exc)[:300]}); the "
                      "delivered job is kept: fix the input or give another job id")
    if current == recorded:
        deliverable = ((doc.get("outputs") or {}).get("final.mp4") or {}).get("uri") or store.uri(
            f"{params.job_id}/final.mp4")
        return deliverable, "delivered from the same inputs (SHA-256)"
    changed = sorted(r for r in set(current) | set(recorded) if current.get(r) != recorded.get(r))
    return None, f"inputs changed since delivery: {', '.join(changed)}"


# ----------------------------------------------------------------------------------------------- deployment runs

def _final_outcome(run: RowRun, flow_run, store: Store, seconds: float) -> RowOutcome:
    state = flow_run.state
    job_id = run.params.job_id or ""
    if state is not None and state.is_completed():
        try:
            doc = store.read_json(f"{job_id}/manifest.json")
            uri = doc["outputs"]["final.mp4"]["uri"]
        except (OSError, KeyError, ValueError, TypeError) as exc:
            return RowOutcome(run.row, job_id, "failed", "", f"run {flow_run.id} completed but its manifest.json "
                              f"cannot be read: {one_line(exc)[:200]}", seconds)
        return RowOutcome(run.row, job_id, "done", uri, run.note, seconds)
    name = state.name if state is not None else "unknown"
    message = " ".join((state.message or "").split()) if state is not None else ""
    return RowOutcome(run.row, job_id, "failed", "", f"run {flow_run.id} ended {name}: {message}"[:500], seconds)


def run_on_deployment(rows: list[RowRun], deployment: str, max_concurrent: int, timeout_s: float, store: Store,
                      logger: logging.Logger | logging.LoggerAdapter) -> list[RowOutcome]:
    """Each row as a run of `deployment`, at most `max_concurrent` unfinished at once; waits for all of them and
    returns their outcomes (a run that is not final after `timeout_s` is reported failed and left alone)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.runtime import flow_run as this_run

    pending = list(rows)
    in_flight: dict[Any, tuple[RowRun, float]] = {}  # flow run id -> (row, submitted at)
    out: list[RowOutcome] = []
    with get_client(sync_client=True) as client:
        while pending or in_flight:
            while pending and len(in_flight) < max_concurrent:
                run = pending.pop(0)
                started = time.monotonic()
                try:
                    flow_run = run_deployment(deployment, parameters={"params": run.params.model_dump(mode="json")},
                                              timeout=0, idempotency_key=f"lipline-batch-{this_run.id}-row{run.row}",
                                              flow_run_name=f"{run.params.job_id}")
                except Exception as exc:  # noqa: BLE001 - a refused submission fails its row, not the batch
                    _, reason = reason_of(exc)
                    logger.warning("row %d: not submitted to %s: %s", run.row, deployment, reason)
                    out.append(RowOutcome(run.row, run.params.job_id or "", "failed", "", reason, 0.0))
                    continue
                logger.info("row %d (%s): submitted as run %s", run.row, run.params.job_id, flow_run.id)
                in_flight[flow_run.id] = (run, started)
            if not in_flight:
                continue
            time.sleep(POLL_S)
            for run_id, (run, started) in list(in_flight.items()):
                flow_run = client.read_flow_run(run_id)
                waited = time.monotonic() - started
                if flow_run.state is not None and flow_run.state.is_final():
                    out.append(_final_outcome(run, flow_run, store, round(waited, 3)))
                elif waited > timeout_s:
                    out.append(RowOutcome(run.row, run.params.job_id or "", "failed", "",
                                          f"run {run_id} still {flow_run.state_name} after {timeout_s:g} s "
                                          "(row_timeout_s); it was left running", round(waited, 3)))
                else:
                    continue
                del in_flight[run_id]
    return out


# ------------------------------------------------------------------------------------------------------- results

def write_results(store: Store, batch_id: str, rows: list[dict[str, Any]]) -> str:
    """``batches/<batch_id>/results.csv`` in `store` (uploaded whole and verified); returns its URI."""
    with tempfile.TemporaryDirectory(prefix="lipline-batch-") as tmp:
        path = Path(tmp) / "results.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        return store.put_file(path, f"batches/{batch_id}/results.csv").uri
