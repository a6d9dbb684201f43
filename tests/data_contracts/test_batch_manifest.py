"""The batch manifest contract (data_contracts/batch_manifest.json): one test per rule, on in-memory manifests
(no Prefect, no media); reading CSV, Parquet and JSON lines."""

from __future__ import annotations

import io
import json
import re

import pandas as pd
import pytest

from lipline.errors import ManifestError
from lipline.params import JOB_ID, LocalizeParams
from lipline.tasks.batch_manifest import (MEDIA_COLUMNS, check_manifest, contract_json, known_columns, load_contract,
                                          read_manifest)

GOOD = {"video": "talk.mp4", "audio": "dub.wav", "job_id": "j1"}


def problems(*rows: dict, columns: list[str] | None = None) -> list[tuple]:
    frame = pd.DataFrame(list(rows), columns=columns, dtype=object).fillna("")
    return [(p.row, p.column, p.rule, p.severity, p.value) for p in check_manifest(frame)]


def test_contract_is_a_gx_suite_with_lipline_meta():
    data = contract_json()
    suite = load_contract()
    assert suite.name == data["name"] == "lipline.batch_manifest"
    assert [e["meta"] for e in suite.to_json_dict()["expectations"]] == [e["meta"] for e in data["expectations"]]
    rules = [e["meta"]["rule"] for e in data["expectations"]]
    assert len(rules) == len(set(rules)) and all(re.fullmatch(r"batch\.[a-z_]+", r) for r in rules)
    for exp in data["expectations"]:
        meta = exp["meta"]
        assert meta["severity"] in ("fail", "warn") and meta["hint"] and meta["expected"] and meta["observed"]
        assert exp["severity"] == {"fail": "critical", "warn": "info"}[meta["severity"]]
        assert meta["scope"] in ("row", "column") and meta["column"]


def test_contract_matches_the_code_it_guards():
    """Engine names, job-id pattern, loudness bounds and known columns agree with LocalizeParams."""
    from lipline.models.registry import engine_specs

    by_rule = {e["meta"]["rule"]: e["kwargs"] for e in contract_json()["expectations"]}
    assert set(by_rule["batch.engine"]["value_set"]) == {"auto", *(s.name for s in engine_specs("video"))}
    assert by_rule["batch.job_id_safe"]["regex"] == JOB_ID.pattern
    meta = LocalizeParams.model_fields["loudness_lufs"].metadata
    ge = next(m.ge for m in meta if hasattr(m, "ge"))
    le = next(m.le for m in meta if hasattr(m, "le"))
    assert (by_rule["batch.loudness_range"]["min_value"], by_rule["batch.loudness_range"]["max_value"]) == (ge, le)
    for column in known_columns():
        name = f"{column}_uri" if column in MEDIA_COLUMNS else column
        assert name in LocalizeParams.model_fields, column


def test_a_good_manifest_has_no_problems():
    assert problems(GOOD, {"video": "s3://bucket/a b.mp4", "audio": "/abs/dub.wav", "job_id": "j2",
                           "engine": "passthrough", "loudness_lufs": "-23"}) == []


@pytest.mark.parametrize("column", ["video", "audio"])
def test_video_and_audio_present(column):
    assert problems(GOOD, {**GOOD, "job_id": "j2", column: ""}) == [
        (2, column, f"batch.{column}_present", "fail", "empty")]


BAD_URIS = ["s3:/bucket/a.mp4", "s3://bucket/", "clips/", "a\tb.mp4", "s3://", "file:/x.mp4"]


@pytest.mark.parametrize("column", MEDIA_COLUMNS)
def test_uris_well_formed(column):
    rows = [{**GOOD, "job_id": f"j{i}", column: value} for i, value in enumerate(BAD_URIS, start=1)]
    assert problems(*rows) == [(i, column, f"batch.{column}_uri", "fail", value)
                               for i, value in enumerate(BAD_URIS, start=1)]


def test_unknown_engine():
    assert problems({**GOOD, "engine": "wav2lip"}) == [(1, "engine", "batch.engine", "fail", "wav2lip")]


def test_loudness_target():
    cases = [("loud", "batch.loudness_number"), ("-99", "batch.loudness_range"), ("0", "batch.loudness_range"),
             ("nan", "batch.loudness_number")]
    rows = [{**GOOD, "job_id": f"j{i}", "loudness_lufs": v} for i, (v, _) in enumerate(cases, start=1)]
    assert problems(*rows) == [(i, "loudness_lufs", rule, "fail", v) for i, (v, rule) in enumerate(cases, start=1)]


def test_job_id_safe():
    bad = ["../escape", "a/b", ".hidden", "x" * 129, "sp ace"]
    assert problems(*({**GOOD, "job_id": v} for v in bad)) == [
        (i, "job_id", "batch.job_id_safe", "fail", v) for i, v in enumerate(bad, start=1)]


def test_job_id_unique_names_both_rows():
    found = problems(GOOD, {**GOOD, "video": "other.mp4"}, {**GOOD, "job_id": "j9"})
    assert found == [(1, "job_id", "batch.job_id_unique", "fail", "j1 (also on row 2)"),
                     (2, "job_id", "batch.job_id_unique", "fail", "j1 (also on row 1)")]


def test_duplicated_row_flags_the_copies_only():
    found = problems(GOOD, {**GOOD, "job_id": "j2"}, GOOD, GOOD)
    assert found == [(3, "*", "batch.duplicate_row", "fail", "same as row 1"),
                     (4, "*", "batch.duplicate_row", "fail", "same as row 1")]


def test_unknown_columns_warn():
    found = problems({**GOOD, "colour": "red", "Engine": "x"})
    assert found == [(None, "colour", "batch.unknown_column", "warn", "colour"),
                     (None, "Engine", "batch.unknown_column", "warn", "Engine")]


def test_every_problem_is_one_line_naming_row_column_rule_value_and_hint():
    frame = pd.DataFrame([{**GOOD, "engine": "wav2lip"}])
    (problem,) = check_manifest(frame)
    line = problem.line("s3://b/nightly.csv")
    assert line.startswith("batch manifest s3://b/nightly.csv row 1, column engine: batch.engine: 'wav2lip'")
    assert problem.hint in line and "\n" not in line


# ---------------------------------------------------------------------------------------------------- reading

ROWS = [{"video": "a.mp4", "audio": "a.wav", "job_id": "p1", "loudness_lufs": -23.0},
        {"video": "b.mp4", "audio": "b.wav", "job_id": "p2", "loudness_lufs": None}]


def test_parquet_manifest_reads_and_checks(tmp_path):
    path = tmp_path / "nightly.parquet"
    pd.DataFrame(ROWS).to_parquet(path)
    frame = read_manifest(str(path))
    assert list(frame["job_id"]) == ["p1", "p2"] and frame["loudness_lufs"].iloc[0] == -23.0
    assert check_manifest(frame) == []
    pd.DataFrame([{**ROWS[0], "loudness_lufs": -60.0}]).to_parquet(path)
    assert [(p.rule, p.value) for p in check_manifest(read_manifest(str(path)))] == [("batch.loudness_range", "-60")]


def test_json_lines_manifest_still_reads(tmp_path):
    path = tmp_path / "nightly.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert list(read_manifest(str(path))["video"]) == ["a.mp4", "b.mp4"]


def test_not_parquet_is_one_line(tmp_path):
    path = tmp_path / "nightly.parquet"
    path.write_bytes(b"video,audio\na.mp4,b.wav\n")
    with pytest.raises(ManifestError, match=r"cannot be read as Parquet") as info:
        read_manifest(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_csv_cells_stay_text():
    frame = pd.read_csv(io.StringIO("video,audio,job_id\n001.mp4,a.wav,007\n"), dtype=str, keep_default_na=False)
    assert check_manifest(frame) == []
