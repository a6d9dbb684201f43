"""The nightly batch flow: jobs from a CSV manifest; a bad row is reported and never stops the others."""

from __future__ import annotations

import json

import pytest

from lipline.flows.batch import localize_batch

pytestmark = pytest.mark.integration


def test_batch_runs_good_rows_and_reports_bad_ones(media, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "talk.mp4").write_bytes(media.video.read_bytes())
    (inputs / "dub.wav").write_bytes(media.dub.read_bytes())
    (inputs / "empty.wav").write_bytes(b"")
    manifest = inputs / "nightly.csv"
    manifest.write_text("video,audio,job_id,loudness_lufs\n"
                        "talk.mp4,dub.wav,batch-good,-23\n"
                        "talk.mp4,empty.wav,batch-bad,\n"
                        "talk.mp4,dub.wav,../escape,\n")
    store = tmp_path / "store"
    summary = localize_batch(str(manifest), store=str(store))
    assert [row["status"] for row in summary] == ["done", "failed", "failed"]
    assert summary[0]["result"] == str(store / "batch-good" / "final.mp4")
    assert "empty.wav" in summary[1]["result"]
    assert "job id" in summary[2]["result"]
    good = json.loads((store / "batch-good" / "manifest.json").read_text())
    assert good["params"]["loudness_lufs"] == -23.0
    assert not (store / "batch-bad" / "final.mp4").exists()
    assert json.loads((store / "batch-bad" / "status.json").read_text())["stage"] == "validate"


class _Done:
    def __init__(self, params):
        self.job_id = params.job_id
        self.final_uri = f"done:{params.video_uri}"


def test_a_row_failing_for_any_reason_never_stops_the_others(tmp_path, monkeypatch):
    """Unexpected errors (not only Lipline's own) are reported per row; every later row still runs."""
    from lipline.errors import MediaToolError
    from lipline.flows import batch

    failures = {"r1": RuntimeError("engine crashed"), "r2": OSError(28, "No space left on device"),
                "r3": KeyError("fps"), "r4": MediaToolError("ffmpeg failed")}
    calls = []

    def fake_localize(params):
        calls.append(params.job_id)
        if params.job_id in failures:
            raise failures[params.job_id]
        return _Done(params)

    monkeypatch.setattr(batch, "localize", fake_localize)
    manifest = tmp_path / "rows.csv"
    manifest.write_text("video,audio,job_id\n" + "".join(f"v{i}.mp4,a.wav,r{i}\n" for i in range(1, 6)))
    summary = batch.localize_batch(str(manifest), store=str(tmp_path / "store"))
    assert calls == ["r1", "r2", "r3", "r4", "r5"]
    assert [row["status"] for row in summary] == ["failed", "failed", "failed", "failed", "done"]
    assert summary[0]["result"] == "RuntimeError: engine crashed"
    assert summary[1]["result"].startswith("OSError: ") and "No space left" in summary[1]["result"]
    assert summary[2]["result"] == "KeyError: 'fps'"
    assert summary[3]["result"] == "ffmpeg failed"  # Lipline's own errors read as they are
    assert summary[4]["result"] == f"done:{tmp_path / 'v5.mp4'}"


@pytest.mark.parametrize("spelling", ["manifest.csv", "./manifest.csv"])
def test_manifest_in_the_current_folder_resolves_its_rows(tmp_path, monkeypatch, spelling):
    """A manifest path without a folder: rows are relative to the current folder, as absolute paths."""
    from lipline.flows import batch

    seen = []
    monkeypatch.setattr(batch, "localize", lambda params: seen.append(params) or _Done(params))
    (tmp_path / "sub").mkdir()
    (tmp_path / "manifest.csv").write_text("video,audio,subtitles,intro\n"
                                           "talk.mp4,sub/dub.wav,s3://bucket/subs.srt,/abs/intro.mp4\n")
    monkeypatch.chdir(tmp_path)
    summary = batch.localize_batch(spelling, store=str(tmp_path / "store"))
    assert [row["status"] for row in summary] == ["done"]
    params = seen[0]
    assert params.video_uri == str(tmp_path / "talk.mp4")
    assert params.audio_uri == str(tmp_path / "sub" / "dub.wav")
    assert params.subtitles_uri == "s3://bucket/subs.srt" and params.intro_uri == "/abs/intro.mp4"
