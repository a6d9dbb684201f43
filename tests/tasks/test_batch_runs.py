"""The batch's store side on real SeaweedFS S3: the delivered-job check against a job archived by the real archive
step (inputs in S3 too), and results.csv written through `Store`."""

from __future__ import annotations

import csv
import io
import os

import pytest

from lipline.params import LocalizeParams
from lipline.store import Store
from lipline.tasks.archive import archive_outputs
from lipline.tasks.batch_runs import RESULT_COLUMNS, delivered_uri, write_results
from lipline.uris import sha256_file


@pytest.fixture
def s3_store(s3_env, tmp_path):
    return Store(f"s3://{s3_env.bucket}/batch-{os.urandom(4).hex()}")


def test_delivered_only_from_the_same_inputs(s3_store, tmp_path):
    video, dub = tmp_path / "talk.mp4", tmp_path / "dub.wav"
    video.write_bytes(os.urandom(50_000))
    dub.write_bytes(os.urandom(20_000))
    s3_store.put_file(video, "inputs/talk.mp4")
    s3_store.put_file(dub, "inputs/dub.wav")
    params = LocalizeParams(video_uri=s3_store.uri("inputs/talk.mp4"), audio_uri=s3_store.uri("inputs/dub.wav"),
                            job_id="ep1", engine="passthrough")
    assert delivered_uri(s3_store, params) == (None, "")  # never delivered

    inputs = {"video": {"uri": params.video_uri, "sha256": sha256_file(video)},
              "audio": {"uri": params.audio_uri, "sha256": sha256_file(dub)}}
    final = tmp_path / "final.mp4"
    final.write_bytes(b"deliverable")
    archive_outputs(s3_store, "ep1", {"final.mp4": final}, {"job_id": "ep1", "inputs": inputs})
    assert delivered_uri(s3_store, params) == (s3_store.uri("ep1/final.mp4"),
                                               "delivered from the same inputs (SHA-256)")

    dub.write_bytes(os.urandom(20_000))  # a new dub under the same key
    s3_store.put_file(dub, "inputs/dub.wav")
    assert delivered_uri(s3_store, params) == (None, "inputs changed since delivery: audio")
    with_subs = params.model_copy(update={"subtitles_uri": s3_store.uri("inputs/subs.srt")})
    uri, why = delivered_uri(s3_store, with_subs)  # a subtitle file that is not there: cannot compare
    assert uri is None and why.startswith("cannot hash an input") and "delivered job is kept" in why


def test_results_csv_in_the_store(s3_store):
    rows = [{"row": 1, "job_id": "ep1", "status": "done", "deliverable": "s3://b/ep1/final.mp4", "reason": "",
             "seconds": 12.5},
            {"row": 2, "job_id": "../x", "status": "invalid", "deliverable": "",
             "reason": "job_id: batch.job_id_safe: ../x, with a comma", "seconds": 0.0}]
    uri = write_results(s3_store, "night-7", rows)
    assert uri == s3_store.uri("batches/night-7/results.csv")
    text = s3_store.fs.cat(s3_store._path("batches/night-7/results.csv")).decode()
    read = list(csv.DictReader(io.StringIO(text)))
    assert list(read[0]) == list(RESULT_COLUMNS)
    assert [(r["row"], r["status"], r["reason"]) for r in read] == [
        ("1", "done", ""), ("2", "invalid", "job_id: batch.job_id_safe: ../x, with a comma")]
