"""The nightly batch flow on the package's real Prefect server: bad rows listed and never run, good rows run,
delivered rows skipped on a re-run, changed inputs run again; results in a table artifact and results.csv;
deployment runs bounded by max_concurrent."""

from __future__ import annotations

import csv
import json
import logging
import threading
import time

import pytest

from lipline.flows.batch import BatchParams, localize_batch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def short_media(media, tmp_path_factory):
    """A 5.5 s talking head and dub (the shortest the audio contract accepts, plus margin)."""
    from tests import media_factory as mf

    d = tmp_path_factory.mktemp("batch-media")
    return {"video": mf.talking_video(d / "talk.mp4", media.face, 5.5),
            "dub": mf.write_audio(d / "dub.wav", mf.speech_like(5.5)),
            "dub2": mf.write_audio(d / "dub2.wav", mf.speech_like(5.5, seed=7))}


def read_results(uri: str) -> list[dict]:
    with open(uri, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def artifact_rows(key: str) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        (latest,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                          limit=1, sort=ArtifactSort.CREATED_DESC)
    data = latest.data
    return json.loads(data) if isinstance(data, str) else data


def test_batch_bad_row_good_row_and_rerun_skips_delivered(short_media, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "talk.mp4").write_bytes(short_media["video"].read_bytes())
    (inputs / "dub.wav").write_bytes(short_media["dub"].read_bytes())
    manifest = inputs / "nightly.csv"
    manifest.write_text("video,audio,job_id,engine,loudness_lufs,colour\n"
                        "talk.mp4,dub.wav,batch-good,passthrough,-23,red\n"
                        "talk.mp4,dub.wav,../escape,wav2lip,,\n")
    store = tmp_path / "store"
    params = BatchParams(manifest_uri=str(manifest), store=str(store), batch_id="night-1")

    first = localize_batch(params)
    assert [(r["row"], r["job_id"], r["status"]) for r in first.rows] == [
        (1, "batch-good", "done"), (2, "../escape", "invalid")]
    assert first.rows[0]["deliverable"] == str(store / "batch-good" / "final.mp4")
    assert "job_id: batch.job_id_safe: ../escape" in first.rows[1]["reason"]
    assert "engine: batch.engine: wav2lip" in first.rows[1]["reason"]
    assert json.loads((store / "batch-good" / "manifest.json").read_text())["params"]["loudness_lufs"] == -23.0
    assert first.results_uri == str(store / "batches" / "night-1" / "results.csv")
    on_disk = read_results(first.results_uri)
    assert [(r["row"], r["job_id"], r["status"], r["deliverable"]) for r in on_disk] == [
        ("1", "batch-good", "done", str(store / "batch-good" / "final.mp4")), ("2", "../escape", "invalid", "")]
    assert float(on_disk[0]["seconds"]) > 0 and on_disk[1]["reason"] == first.rows[1]["reason"]
    assert [r["status"] for r in artifact_rows("batch-results")] == ["done", "invalid"]
    problems = artifact_rows("batch-manifest-problems")
    assert {(p["row"], p["column"], p["rule"]) for p in problems} == {
        (None, "colour", "batch.unknown_column"), (2, "engine", "batch.engine"), (2, "job_id", "batch.job_id_safe")}

    # Same inputs: skipped. A changed dub for the same job id: runs again and replaces the deliverable.
    delivered_at = (store / "batch-good" / "manifest.json").stat().st_mtime_ns
    second = localize_batch(params.model_copy(update={"batch_id": "night-2"}))
    assert [r["status"] for r in second.rows] == ["skipped (delivered)", "invalid"]
    assert second.rows[0]["deliverable"] == str(store / "batch-good" / "final.mp4")
    assert (store / "batch-good" / "manifest.json").stat().st_mtime_ns == delivered_at
    assert read_results(second.results_uri)[0]["status"] == "skipped (delivered)"

    # A changed dub for the same job id runs again, replacing the delivered job (planned here, not re-run: a
    # second full job would double this test's time; `replace` itself is tested with the localize flow).
    (inputs / "dub.wav").write_bytes(short_media["dub2"].read_bytes())
    from lipline.flows.batch import _plan_rows
    from lipline.tasks.batch_manifest import read_manifest

    problems = []  # the contract's findings are left out: row 2 is then refused by LocalizeParams (batch.params)
    known, todo = _plan_rows(read_manifest(str(manifest)), str(inputs), params, "night-3", problems,
                             logging.getLogger())
    assert [(k.row, k.status) for k in known] == [(2, "invalid")] and [t.row for t in todo] == [1]
    assert {(q.row, q.column, q.rule) for q in problems} == {(2, "job_id", "batch.params"),
                                                             (2, "engine", "batch.params")}
    assert todo[0].params.replace and todo[0].note == "inputs changed since delivery: audio"


class _Done:
    def __init__(self, params):
        self.job_id = params.job_id
        self.final_uri = f"done:{params.video_uri}"


def test_a_row_failing_for_any_reason_never_stops_the_others(tmp_path, monkeypatch):
    """Unexpected errors (not only Lipline's own) are reported per row; every later row still runs."""
    from lipline.errors import MediaToolError
    from lipline.flows import batch

    failures = {"r1": RuntimeError("engine crashed"), "r2": OSError(28, "No space left on device"),
                "r3": MediaToolError("ffmpeg failed")}
    calls = []

    def fake_localize(params):
        calls.append(params.job_id)
        if params.job_id in failures:
            raise failures[params.job_id]
        return _Done(params)

    monkeypatch.setattr(batch, "localize", fake_localize)
    manifest = tmp_path / "rows.csv"
    manifest.write_text("video,audio,job_id\n" + "".join(f"v{i}.mp4,a.wav,r{i}\n" for i in range(1, 5)))
    result = batch.localize_batch(BatchParams(manifest_uri=str(manifest), store=str(tmp_path / "store")))
    assert calls == ["r1", "r2", "r3", "r4"]
    assert [row["status"] for row in result.rows] == ["failed", "failed", "failed", "done"]
    assert result.rows[0]["reason"] == "RuntimeError: engine crashed"
    assert result.rows[1]["reason"].startswith("OSError: ") and "No space left" in result.rows[1]["reason"]
    assert result.rows[2]["reason"] == "ffmpeg failed"  # Lipline's own errors read as they are
    assert result.rows[3]["deliverable"] == f"done:{tmp_path / 'v4.mp4'}"


def test_manifest_in_the_current_folder_resolves_its_rows(tmp_path, monkeypatch):
    """A manifest path without a folder: rows are relative to the current folder, as absolute paths."""
    from lipline.flows import batch

    seen = []
    monkeypatch.setattr(batch, "localize", lambda params: seen.append(params) or _Done(params))
    (tmp_path / "sub").mkdir()
    (tmp_path / "manifest.csv").write_text("video,audio,subtitles,intro\n"
                                           "talk.mp4,sub/dub.wav,s3://bucket/subs.srt,/abs/intro.mp4\n")
    monkeypatch.chdir(tmp_path)
    result = batch.localize_batch(BatchParams(manifest_uri="manifest.csv", store=str(tmp_path / "store")))
    assert [row["status"] for row in result.rows] == ["done"]
    params = seen[0]
    assert params.video_uri == str(tmp_path / "talk.mp4")
    assert params.audio_uri == str(tmp_path / "sub" / "dub.wav")
    assert params.subtitles_uri == "s3://bucket/subs.srt" and params.intro_uri == "/abs/intro.mp4"
    assert params.job_id == f"{result.batch_id}-r1"  # a row without a job id gets one from the batch


def _play_worker(deployment_id, store, video, stop: threading.Event, peak: list[int]) -> None:
    """Stands in for a worker on the deployment's pool: takes the scheduled runs, records how many are unfinished
    at once, completes each (delivering its job through the real archive step) or fails it (job id 'w-fail').

    It finishes runs only while two are open, or once no new run has come for 3 s (the last one): on a loaded machine
    a worker that finished each run at once could be done with the first before the batch had created the second,
    and the peak would say nothing about the bound. A batch that kept only one run in flight still shows a peak of 1."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.states import Completed, Failed, Running

    from lipline.tasks.archive import archive_outputs

    seen: set = set()
    last_new = time.monotonic()
    with get_client(sync_client=True) as client:
        while not stop.is_set():
            mine = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            runs = client.read_flow_runs(deployment_filter=mine)
            open_runs = [r for r in runs if not r.state.is_final()]
            peak.append(len(open_runs))
            if {r.id for r in runs} - seen:
                seen |= {r.id for r in runs}
                last_new = time.monotonic()
            may_finish = len(open_runs) >= 2 or time.monotonic() - last_new > 3
            for run in open_runs:
                if run.state.is_scheduled() or run.state.is_pending():
                    client.set_flow_run_state(run.id, Running(), force=True)
                    continue
                if not may_finish:
                    continue
                job_id = run.parameters["params"]["job_id"]
                if job_id == "w-fail":
                    client.set_flow_run_state(run.id, Failed(message="JobExists: job w-fail is already complete"),
                                              force=True)
                else:
                    archive_outputs(store, job_id, {"final.mp4": video}, {"job_id": job_id, "inputs": {}})
                    client.set_flow_run_state(run.id, Completed(), force=True)
            time.sleep(0.3)


def test_deployment_rows_bounded_and_collected(short_media, tmp_path):
    from prefect.client.orchestration import get_client

    from lipline.store import Store

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("localize")
        deployment_id = client.create_deployment(flow_id=flow_id, name="batch-bound-test")
    store = Store(str(tmp_path / "store"))
    rows = ["w-fail", *(f"w{i}" for i in range(1, 5))]
    manifest = tmp_path / "m.csv"
    manifest.write_text("video,audio,job_id\n" + "".join(f"talk.mp4,dub.wav,{j}\n" for j in rows))
    stop, peak = threading.Event(), []
    worker = threading.Thread(target=_play_worker, args=(deployment_id, store, short_media["video"], stop, peak))
    worker.start()
    try:
        result = localize_batch(BatchParams(manifest_uri=str(manifest), store=store.root, max_concurrent=2,
                                            localize_deployment="localize/batch-bound-test", batch_id="dep"))
    finally:
        stop.set()
        worker.join()
    assert [(r["job_id"], r["status"]) for r in result.rows] == [("w-fail", "failed")] + [
        (f"w{i}", "done") for i in range(1, 5)]
    assert "ended Failed: JobExists: job w-fail" in result.rows[0]["reason"]
    assert result.rows[1]["deliverable"] == store.uri("w1/final.mp4")
    assert max(peak) == 2  # the batch kept two runs in flight, never more


def test_nightly_deployment_parameters_fill_the_typed_form():
    """deployments/prefect.yaml's nightly-batch parameters are a valid `BatchParams`; every field is described
    in the schema the Prefect UI renders."""
    from pathlib import Path

    import yaml
    from prefect.utilities.callables import parameter_schema

    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "deployments" / "prefect.yaml").read_text())
    (nightly,) = [d for d in doc["deployments"] if d["name"] == "nightly-batch"]
    assert nightly["entrypoint"] == "flows/batch.py:localize_batch"
    given = nightly["parameters"]["params"]
    assert given["manifest_uri"].endswith("/manifests/nightly.csv")
    params = BatchParams(**{**given, "manifest_uri": "s3://bucket/manifests/nightly.csv"})
    assert params.localize_deployment == "localize/localize" and params.max_concurrent == 4
    schema = parameter_schema(localize_batch.fn).model_dump_for_openapi()
    fields = schema["definitions"]["BatchParams"]["properties"]
    assert set(fields) == set(BatchParams.model_fields) and all(f.get("description") for f in fields.values())
