"""The `localize-batch` flow: many jobs from one manifest (CSV or JSON lines in the store), e.g. nightly.

Manifest columns: `video`, `audio` (required), `subtitles`, `intro`, `outro`, `job_id`, `engine`,
`loudness_lufs`, `audio_longer`, `video_longer` (optional; empty cells take the defaults). Relative URIs are
resolved against the manifest's folder. A bad row is reported and skipped; it never stops the batch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.deployments import run_deployment
from pydantic import ValidationError

from lipline.errors import LiplineError
from lipline.flows.localize import localize
from lipline.params import LocalizeParams
from lipline.uris import local_path

COLUMNS = {"video": "video_uri", "audio": "audio_uri", "subtitles": "subtitles_uri", "intro": "intro_uri",
           "outro": "outro_uri"}


def read_manifest(manifest_uri: str) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        path = local_path(manifest_uri, Path(tmp))
        if path.suffix.lower() in (".json", ".jsonl"):
            frame = pd.read_json(path, lines=path.suffix.lower() == ".jsonl", dtype=False)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"video", "audio"} - set(frame.columns)
    if missing:
        raise LiplineError(f"{manifest_uri}: manifest lacks column(s) {', '.join(sorted(missing))}")
    return frame


def row_params(row: dict[str, Any], base: str, defaults: dict[str, Any]) -> LocalizeParams:
    values = {k: v for k, v in row.items() if v not in ("", None) and not (isinstance(v, float) and pd.isna(v))}
    fields: dict[str, Any] = dict(defaults)
    for column, value in values.items():
        name = COLUMNS.get(column, column)
        if name in COLUMNS.values() and "://" not in str(value) and not str(value).startswith("/"):
            value = f"{base}/{value}"
        fields[name] = value
    return LocalizeParams(**fields)


@flow(name="localize-batch", description="Run `localize` for every row of a manifest; one failed row never stops the rest")
def localize_batch(manifest_uri: str, store: str | None = None, localize_deployment: str | None = None) -> list[dict]:
    """`localize_deployment` (e.g. `localize/localize`) fans rows out as separate runs on the cpu pool;
    without it the rows run one after another as subflows of this run."""
    logger = get_run_logger()
    frame = read_manifest(manifest_uri)
    base = manifest_uri.rsplit("/", 1)[0]
    summary: list[dict] = []
    for number, row in enumerate(frame.to_dict(orient="records"), start=1):
        entry: dict[str, Any] = {"row": number, "video": row.get("video"), "job_id": row.get("job_id") or ""}
        try:
            params = row_params(row, base, {"store": store} if store else {})
            if localize_deployment:
                run = run_deployment(localize_deployment, parameters={"params": params.model_dump(mode="json")}, timeout=0)
                entry.update(status="submitted", result=str(run.id))
            else:
                result = localize(params)
                entry.update(status="done", job_id=result.job_id, result=result.final_uri)
        except (ValidationError, LiplineError) as exc:
            logger.warning("row %d: %s", number, exc)
            entry.update(status="failed", result=" ".join(str(exc).split())[:500])
        summary.append(entry)
    create_table_artifact(summary, key="batch-summary", description=f"Batch {manifest_uri}")
    return summary
