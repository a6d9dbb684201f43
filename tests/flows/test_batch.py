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
