"""A batch manifest: read it (CSV, Parquet or JSON lines) and check its rows against its data contract
(`data_contracts/batch_manifest.json`).

Flow::

    manifest file  ->  one measurement row per manifest row (+ one row per manifest column)
                   ->  GX suite lipline.batch_manifest  ->  one `RowProblem(row, column, rule, severity, value, hint)`
                       per failed row and rule

The suite runs on the ephemeral GX context `tasks/validate.py` builds (`_gx`, `_run_suite`, `_fill` are reused,
not copied). Row numbers count data rows from 1 (the header is not a row). A row with a ``fail`` problem is
invalid and does not run; ``warn`` problems (unknown columns) are reported only.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from lipline.errors import LiplineError, ManifestError, one_line
from lipline.uris import local_path

MEDIA_COLUMNS = ("video", "audio", "subtitles", "intro", "outro")
FORMATS = {".csv": "CSV", ".parquet": "Parquet", ".pq": "Parquet", ".json": "JSON", ".jsonl": "JSON lines"}


@dataclass(frozen=True)
class RowProblem:
    """One failed rule: which row (None: the manifest as a whole) and column, what value, what to do."""

    row: int | None
    column: str
    rule: str
    severity: str
    value: str
    expected: str
    hint: str

    def line(self, manifest_uri: str) -> str:
        where = f"row {self.row}" if self.row is not None else "header"
        return (f"batch manifest {manifest_uri} {where}, column {self.column}: {self.rule}: {self.value!r} "
                f"(expected {self.expected}); {self.hint}")

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------------- reading

def _read_frame(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".json", ".jsonl"):
        return pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def read_manifest(manifest_uri: str) -> pd.DataFrame:
    """The manifest's rows; a missing, unreadable or malformed manifest is a one-line `ManifestError`.
    CSV by default; ``.parquet``/``.pq`` are Parquet, ``.json``/``.jsonl`` JSON (lines)."""
    kind = FORMATS.get(Path(manifest_uri.split("?")[0]).suffix.lower(), "CSV")
    if kind == "JSON lines":
        kind = "JSON"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            frame = _read_frame(local_path(manifest_uri, Path(tmp)))
        except FileNotFoundError as exc:
            raise ManifestError(f"batch manifest {manifest_uri}: not found; check the path or URI") from exc
        except LiplineError as exc:
            raise ManifestError(f"batch manifest {exc}") from exc
        except ImportError as exc:
            raise ManifestError(f"batch manifest {manifest_uri}: reading {kind} needs pyarrow ({one_line(exc)[:200]}); "
                                "install it (pip install pyarrow) or write the manifest as CSV") from exc
        except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ManifestError(f"batch manifest {manifest_uri}: cannot be read as {kind} ({one_line(exc)[:200]}); "
                                "write a CSV with a header row, Parquet, or JSON lines, with columns video and "
                                "audio") from exc
    frame.columns = [str(c) for c in frame.columns]
    missing = {"video", "audio"} - set(frame.columns)
    if missing:
        raise ManifestError(f"batch manifest {manifest_uri}: lacks column(s) {', '.join(sorted(missing))}; "
                            "the header must name at least video and audio")
    return frame


def is_blank(value: Any) -> bool:
    """Empty strings, None and NaN are 'not given' (an empty cell takes the default)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or dict cell (JSON): given
        return False


def cell_text(value: Any) -> str | None:
    """A cell as text for the rules (None when blank); whole floats from Parquet/JSON read as integers."""
    if is_blank(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


# ---------------------------------------------------------------------------------------------------- measuring

def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def measure_rows(frame: pd.DataFrame) -> list[dict]:
    """One measurement row per manifest row: the cells as text, the loudness as a number, duplicates and job-id
    clashes resolved across rows."""
    rows: list[dict] = []
    first_seen: dict[tuple, int] = {}
    for number, record in enumerate(frame.to_dict(orient="records"), start=1):
        cells = {column: cell_text(value) for column, value in record.items()}
        key = tuple(sorted((c, v) for c, v in cells.items() if v is not None))
        duplicate_of = first_seen.setdefault(key, number)
        loudness = cells.get("loudness_lufs")
        row = {"row": number, **{c: cells.get(c) for c in MEDIA_COLUMNS}, "engine": cells.get("engine"),
               "job_id": cells.get("job_id"), "loudness_text": loudness,
               "loudness_lufs": _number(loudness) if loudness is not None else None,
               "loudness_is_number": (_number(loudness) is not None) if loudness is not None else None,
               "duplicate_of": duplicate_of if duplicate_of != number else None}
        row["job_id_distinct"] = row["job_id"] if row["duplicate_of"] is None else None
        rows.append(row)
    for row in rows:
        others = [str(r["row"]) for r in rows if r is not row and r["job_id_distinct"] is not None
                  and r["job_id_distinct"] == row["job_id_distinct"]]
        row["other_rows"] = ", ".join(others)
    return rows


# ----------------------------------------------------------------------------------------------------- checking

@functools.cache
def contract_json() -> dict:
    """The batch manifest contract as stored (GX suite JSON with Lipline meta)."""
    text = resources.files("lipline.data_contracts").joinpath("batch_manifest.json").read_text(encoding="utf-8")
    return json.loads(text)


def load_contract():
    """The GX `ExpectationSuite` of the batch manifest."""
    from lipline.tasks.validate import _gx

    gx, _ = _gx()
    data = {k: v for k, v in contract_json().items() if k != "id"}
    return gx.ExpectationSuite(**data)


def known_columns() -> list[str]:
    """The manifest columns Lipline reads (from the contract's `batch.unknown_column` rule)."""
    rule = next(e for e in contract_json()["expectations"] if e["meta"]["rule"] == "batch.unknown_column")
    return list(rule["kwargs"]["value_set"])


def _problems(suite, scope: str, rows: list[dict]) -> list[RowProblem]:
    from lipline.tasks.validate import _fill, _gx, _run_suite

    gx, _ = _gx()
    expectations = [e for e in suite.expectations if (e.meta or {}).get("scope") == scope]
    if not rows or not expectations:
        return []
    out: list[RowProblem] = []
    part = gx.ExpectationSuite(name=f"{suite.name}.{scope}", expectations=expectations)
    for result in _run_suite(part, rows):
        if result.success:
            continue
        cfg = result.expectation_config
        meta, kwargs = cfg.meta or {}, dict(cfg.kwargs)
        expected = _fill(meta.get("expected", str(kwargs)), kwargs)
        if result.exception_info and result.exception_info.get("raised_exception"):
            raise ManifestError(f"batch manifest rule {meta.get('rule')} could not be evaluated: "
                                f"{one_line(str(result.exception_info.get('exception_message')))[:200]}")
        for index in result.result.get("unexpected_index_list") or []:
            row = rows[index]
            value = _fill(meta.get("observed", "{" + kwargs["column"] + "}"), row)
            column = row["name"] if scope == "column" else meta.get("column", kwargs["column"])
            out.append(RowProblem(row=row.get("row"), column=column, rule=meta.get("rule", cfg.type),
                                  severity=meta.get("severity", "fail"), value=value, expected=expected,
                                  hint=_fill(meta.get("hint", ""), row)))
    return out


def check_manifest(frame: pd.DataFrame) -> list[RowProblem]:
    """Every problem of the manifest's rows and columns, by row number then rule order; never raises for bad
    cells (only for a contract GX cannot evaluate, a bug)."""
    suite = load_contract()
    rows = measure_rows(frame)
    problems = _problems(suite, "row", rows)
    problems += _problems(suite, "column", [{"name": c} for c in frame.columns])
    order = {e.meta["rule"]: i for i, e in enumerate(suite.expectations)}
    return sorted(problems, key=lambda p: (p.row or 0, order.get(p.rule, 0)))
