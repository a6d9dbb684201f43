"""The `localize-batch` flow: many jobs from one manifest (CSV, Parquet or JSON lines in the store), e.g. nightly.

The body reads as the business process:

1. read the manifest and check its rows against `data_contracts/batch_manifest.json` (`tasks/batch_manifest.py`):
   every bad row is listed (row, column, rule, value, hint) and does not run; the good rows do;
2. skip each row whose job is already delivered from the same inputs (the SHA-256s its `manifest.json` records);
   a row whose inputs changed runs again and replaces that deliverable;
3. run the rest: with `localize_deployment` as deployment runs, at most `max_concurrent` in flight, waiting for
   each to finish (`tasks/batch_runs.py`); without it one after another as subflows of this run;
4. publish one row per manifest row (done / skipped / failed / invalid) as a table artifact and as
   ``STORE/batches/<batch_id>/results.csv``.

Manifest columns: `video`, `audio` (required), `subtitles`, `intro`, `outro`, `job_id`, `engine`, `loudness_lufs`,
and the other scalar `LocalizeParams` fields (`known_columns()`); empty cells take the defaults, unknown columns
are reported (warn) and ignored. Relative paths are resolved against the manifest's folder. A row without a
`job_id` gets ``<batch_id>-r<row>`` (so it is never skipped as delivered: give job ids for that).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Optional

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lipline.flows.localize import localize
from lipline.params import JOB_ID, LocalizeParams
from lipline.store import Store
from lipline.tasks.batch_manifest import (MEDIA_COLUMNS, RowProblem, cell_text, check_manifest, is_blank,
                                          known_columns, read_manifest)
from lipline.tasks.batch_runs import (RowOutcome, RowRun, delivered_uri, reason_of, run_on_deployment,
                                      write_results)
from lipline.uris import is_local, path_to_uri, to_path

__all__ = ["BatchParams", "BatchResult", "localize_batch", "read_manifest", "manifest_base", "row_params"]


class BatchParams(BaseModel):
    """One batch: which manifest, where the deliverables go, how the rows run."""

    model_config = ConfigDict(extra="forbid")

    manifest_uri: str = Field(description="The manifest: a CSV (header row), Parquet (.parquet) or JSON lines "
                                          "(.jsonl) file, path or URI; one job per row, columns video and audio "
                                          "required")
    store: Optional[str] = Field(None, description="Store root for every row's deliverable and the batch results "
                                                   "(folder or fsspec URI); default from LIPLINE_STORE")
    localize_deployment: Optional[str] = Field(None, description="Run rows as runs of this deployment (e.g. "
                                                                 "'localize/localize') on its pool; empty: one "
                                                                 "after another inside this run")
    max_concurrent: int = Field(4, ge=1, le=256, description="With a deployment: at most this many rows in flight "
                                                            "at once (more GPU workers: raise it)")
    skip_delivered: bool = Field(True, description="Skip rows whose job id is already delivered from inputs with "
                                                   "the same SHA-256s; rows with changed inputs run again")
    row_timeout_s: float = Field(6 * 3600.0, gt=0, description="With a deployment: a row still unfinished after "
                                                               "this many seconds is reported failed (its run "
                                                               "is left alone)")
    batch_id: Optional[str] = Field(None, pattern=JOB_ID.pattern,
                                    description="Name of this batch (results under STORE/batches/<batch_id>/; "
                                                "letters, digits, '.', '_', '-'); generated from the time when empty")


class BatchResult(BaseModel):
    batch_id: str
    results_uri: str
    rows: list[dict[str, Any]]


def manifest_base(manifest_uri: str) -> str:
    """The folder relative row paths are resolved against: the manifest's own folder, as an absolute path for a
    local manifest (a bare ``manifest.csv`` lives in the current folder), else the URI up to its last ``/``."""
    if is_local(manifest_uri):
        return path_to_uri(to_path(manifest_uri).parent)
    return manifest_uri.rsplit("/", 1)[0]


def _resolve(value: str, base: str) -> str:
    if "://" in value or value.startswith("/"):
        return value
    return path_to_uri(to_path(base) / value) if is_local(base) else f"{base}/{value}"


def row_params(row: dict[str, Any], base: str, store: str | None, job_id: str) -> LocalizeParams:
    """A row's job parameters: the known, filled cells (media paths resolved against `base`); raises pydantic's
    `ValidationError` for a bad value."""
    fields: dict[str, Any] = {"store": store, "job_id": job_id}
    for column in known_columns():
        value = row.get(column)
        if is_blank(value):
            continue
        if column in MEDIA_COLUMNS:
            fields[f"{column}_uri"] = _resolve(str(value), base)
        elif column != "job_id":
            fields[column] = value.strip() if isinstance(value, str) else value
    return LocalizeParams(**fields)


def _param_problems(number: int, exc: ValidationError) -> list[RowProblem]:
    out = []
    for error in exc.errors():
        column = str(error["loc"][0]) if error.get("loc") else "*"
        out.append(RowProblem(row=number, column=column.removesuffix("_uri"), rule="batch.params", severity="fail",
                              value=str(error.get("input"))[:200], expected=error.get("msg", ""),
                              hint="fix this cell or leave it empty for the default"))
    return out


def _new_batch_id() -> str:
    return time.strftime("batch-%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:6]


def _plan_rows(frame, base: str, p: BatchParams, batch_id: str, problems: list[RowProblem],
               logger) -> tuple[list[RowOutcome], list[RowRun]]:
    """Outcomes already known (invalid, skipped) and the rows left to run, in manifest order."""
    bad_rows: dict[int, list[RowProblem]] = {}
    for problem in problems:
        if problem.severity == "fail" and problem.row is not None:
            bad_rows.setdefault(problem.row, []).append(problem)
    store = Store.from_settings(p.store)
    known: list[RowOutcome] = []
    todo: list[RowRun] = []
    for number, row in enumerate(frame.to_dict(orient="records"), start=1):
        given = cell_text(row.get("job_id"))
        job_id = given.strip() if given else f"{batch_id}-r{number}"
        params = None
        if number not in bad_rows:
            try:
                params = row_params(row, base, p.store, job_id)
            except ValidationError as exc:
                bad_rows[number] = _param_problems(number, exc)
                problems.extend(bad_rows[number])
        if params is None:
            reason = "; ".join(f"{q.column}: {q.rule}: {q.value} ({q.hint})" for q in bad_rows[number])
            known.append(RowOutcome(number, job_id, "invalid", "", reason, 0.0))
            continue
        started = time.perf_counter()
        uri, why = delivered_uri(store, params) if p.skip_delivered and given else (None, "")
        if uri:
            known.append(RowOutcome(number, job_id, "skipped (delivered)", uri, why,
                                    round(time.perf_counter() - started, 3)))
            logger.info("row %d (%s): skipped, delivered from the same inputs at %s", number, job_id, uri)
            continue
        if why.startswith("cannot"):  # an input cannot be read: keep the delivered job rather than replace it
            known.append(RowOutcome(number, job_id, "failed", "", why, round(time.perf_counter() - started, 3)))
            continue
        if why:
            params = params.model_copy(update={"replace": True})
            logger.info("row %d (%s): %s; running it again", number, job_id, why)
        todo.append(RowRun(number, params, why))
    return known, todo


def _run_in_process(rows: list[RowRun], logger) -> list[RowOutcome]:
    """One row after another as subflows of this run; a row that fails for any reason never stops the next."""
    out = []
    for run in rows:
        started = time.perf_counter()
        try:
            result = localize(run.params)
            outcome = RowOutcome(run.row, result.job_id, "done", result.final_uri, run.note, 0.0)
        except Exception as exc:  # noqa: BLE001 - one row, whatever went wrong, never stops the others
            expected, reason = reason_of(exc)
            logger.log(logging.WARNING if expected else logging.ERROR, "row %d failed: %s", run.row, reason,
                       exc_info=not expected)
            outcome = RowOutcome(run.row, run.params.job_id or "", "failed", "", reason, 0.0)
        outcome.seconds = round(time.perf_counter() - started, 3)
        out.append(outcome)
    return out


@flow(name="localize-batch", description="Run `localize` for every valid row of a manifest (CSV, Parquet, JSON "
                                         "lines); bad rows listed, delivered rows skipped, results in the store")
def localize_batch(params: BatchParams) -> BatchResult:
    logger = get_run_logger()
    p = params
    batch_id = p.batch_id or _new_batch_id()

    # 1. Read the manifest and check every row against its data contract; bad rows are listed, never run.
    frame = read_manifest(p.manifest_uri)
    problems = check_manifest(frame)

    # 2. Rows already delivered from the same inputs are skipped; changed inputs replace the delivered job.
    known, todo = _plan_rows(frame, manifest_base(p.manifest_uri), p, batch_id, problems, logger)
    for problem in problems:
        logger.warning(problem.line(p.manifest_uri))

    # 3. Run the rest: deployment runs (bounded concurrency) or subflows here, one after another.
    if p.localize_deployment:
        ran = run_on_deployment(todo, p.localize_deployment, p.max_concurrent, p.row_timeout_s,
                                Store.from_settings(p.store), logger)
    else:
        ran = _run_in_process(todo, logger)

    # 4. One row per manifest row: a table artifact and results.csv in the store.
    outcomes = sorted(known + ran, key=lambda o: o.row)
    rows = [o.to_dict() for o in outcomes]
    results_uri = write_results(Store.from_settings(p.store), batch_id, rows)
    create_table_artifact(rows, key="batch-results",
                          description=f"Batch {batch_id} from {p.manifest_uri}: one row per manifest row; "
                                      f"results.csv at {results_uri}")
    if problems:
        create_table_artifact([q.to_dict() for q in problems], key="batch-manifest-problems",
                              description=f"Batch {batch_id}: manifest rows and columns that break "
                                          "data_contracts/batch_manifest.json")
    counts = {s: sum(o.status == s for o in outcomes) for s in dict.fromkeys(o.status for o in outcomes)}
    logger.info("batch %s: %s; results at %s", batch_id, ", ".join(f"{n} {s}" for s, n in counts.items()) or "no rows",
                results_uri)
    return BatchResult(batch_id=batch_id, results_uri=results_uri, rows=rows)

