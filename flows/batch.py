"""The `localize-batch` flow: many jobs from one manifest (CSV or JSON lines in the store), e.g. nightly.

Manifest columns: `video`, `audio` (required), `subtitles`, `intro`, `outro`, `job_id`, `engine`,
`loudness_lufs`, `audio_longer`, `video_longer` (optional; empty cells take the defaults). Relative URIs are
resolved against the manifest's folder (a bare `manifest.csv` is in the current folder). A row that fails for any
reason (bad values, invalid input, a failed stage, an unexpected error) is reported in the summary and the next
row runs; it never stops the batch.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.deployments import run_deployment
from pydantic import ValidationError

from lipline.errors import LiplineError, ManifestError, one_line
from lipline.flows.localize import localize
from lipline.params import LocalizeParams
from lipline.uris import is_local, local_path, path_to_uri, to_path

COLUMNS = {"video": "video_uri", "audio": "audio_uri", "subtitles": "subtitles_uri", "intro": "intro_uri",
           "outro": "outro_uri"}


def read_manifest(manifest_uri: str) -> pd.DataFrame:
    """The manifest's rows; a missing, unreadable or malformed manifest is a one-line `ManifestError`."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = local_path(manifest_uri, Path(tmp))
            if path.suffix.lower() in (".json", ".jsonl"):
                frame = pd.read_json(path, lines=path.suffix.lower() == ".jsonl", dtype=False)
            else:
                frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except FileNotFoundError as exc:
            raise ManifestError(f"batch manifest {manifest_uri}: not found; check the path or URI") from exc
        except LiplineError as exc:
            raise ManifestError(f"batch manifest {exc}") from exc
        except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ManifestError(f"batch manifest {manifest_uri}: cannot be read as "
                                f"{'JSON' if manifest_uri.lower().endswith(('.json', '.jsonl')) else 'CSV'} ({one_line(exc)[:200]}); "
                                "write a CSV with a header row, or JSON lines, with columns video and audio") from exc
    missing = {"video", "audio"} - set(frame.columns)
    if missing:
        raise ManifestError(f"batch manifest {manifest_uri}: lacks column(s) {', '.join(sorted(missing))}; "
                            "the header must name at least video and audio")
    return frame


def manifest_base(manifest_uri: str) -> str:
    """The folder relative row paths are resolved against: the manifest's own folder, as an absolute path for a
    local manifest (a bare ``manifest.csv`` lives in the current folder), else the URI up to its last ``/``."""
    if is_local(manifest_uri):
        return path_to_uri(to_path(manifest_uri).parent)
    return manifest_uri.rsplit("/", 1)[0]


def _cells(row: dict[str, Any]) -> dict[str, Any]:
    """The filled cells of a row (empty strings, None and NaN are 'not given')."""
    return {k: v for k, v in row.items() if v not in ("", None) and not (isinstance(v, float) and pd.isna(v))}


def row_params(row: dict[str, Any], base: str, defaults: dict[str, Any]) -> LocalizeParams:
    fields: dict[str, Any] = dict(defaults)
    for column, value in _cells(row).items():
        name = COLUMNS.get(column, column)
        if name in COLUMNS.values() and "://" not in str(value) and not str(value).startswith("/"):
            value = path_to_uri(to_path(base) / str(value)) if is_local(base) else f"{base}/{value}"
        fields[name] = value
    return LocalizeParams(**fields)


def _reason(exc: BaseException) -> str:
    """One line for the summary: a Lipline or parameter error as it is, anything else with its type."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, (ValidationError, LiplineError)):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:500]


@flow(name="localize-batch", description="Run `localize` for every row of a manifest; one failed row never stops the rest")
def localize_batch(manifest_uri: str, store: str | None = None, localize_deployment: str | None = None) -> list[dict]:
    """`localize_deployment` (e.g. `localize/localize`) fans rows out as separate runs on the cpu pool;
    without it the rows run one after another as subflows of this run."""
    logger = get_run_logger()
    frame = read_manifest(manifest_uri)
    base = manifest_base(manifest_uri)
    summary: list[dict] = []
    for number, row in enumerate(frame.to_dict(orient="records"), start=1):
        cells = _cells(row)
        entry: dict[str, Any] = {"row": number, "video": str(cells.get("video", "")),
                                 "job_id": str(cells.get("job_id", ""))}
        try:
            params = row_params(row, base, {"store": store} if store else {})
            if localize_deployment:
                run = run_deployment(localize_deployment, parameters={"params": params.model_dump(mode="json")}, timeout=0)
                entry.update(status="submitted", result=str(run.id))
            else:
                result = localize(params)
                entry.update(status="done", job_id=result.job_id, result=result.final_uri)
        except Exception as exc:  # noqa: BLE001 - one row, whatever went wrong, never stops the others
            expected = isinstance(exc, (ValidationError, LiplineError))
            logger.log(logging.WARNING if expected else logging.ERROR, "row %d failed: %s", number, _reason(exc),
                       exc_info=not expected)
            entry.update(status="failed", result=_reason(exc))
        summary.append(entry)
    create_table_artifact(summary, key="batch-summary", description=f"Batch {manifest_uri}")
    return summary
