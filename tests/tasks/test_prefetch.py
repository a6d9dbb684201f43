"""Validation started early (`lipline run` before Prefect starts) and taken by the flow's validate task."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from lipline import uris
from lipline.errors import InputError
from lipline.flows import localize
from lipline.tasks import prefetch
from lipline.tasks.validate import prefetch_inputs, validate_inputs
from tests import media_factory as mf


def test_the_same_request_takes_the_prefetched_reports(media, tmp_path):
    files = {"video": str(media.video), "audio": str(media.dub), "subtitles": str(media.subtitles)}
    assert prefetch_inputs(files, {"video.fps.min_fps": 15})
    early = prefetch.take(files, {"video.fps.min_fps": 15}, None)
    assert early is not None and prefetch.take(files, {"video.fps.min_fps": 15}, None) is None  # taken once
    fresh = validate_inputs(files, {"video.fps.min_fps": 15})
    early_reports, _ = early.result()
    assert [r.model_dump() for r in early_reports] == [r.model_dump() for r in fresh]

    assert prefetch_inputs(files, {"video.fps.min_fps": 15})
    reports = validate_inputs(files, {"video.fps.min_fps": 15})
    assert [r.model_dump() for r in reports] == [r.model_dump() for r in fresh]
    assert prefetch.take(files, {"video.fps.min_fps": 15}, None) is None  # the validation took it


def test_a_different_or_changed_request_is_measured_again(media, tmp_path):
    dub = shutil.copyfile(media.dub, tmp_path / "dub.wav")
    files = {"audio": str(dub)}
    assert prefetch_inputs(files, None)
    assert prefetch.take(files, None, "largest") is None  # another face choice: not this request
    mf.write_audio(dub, mf.speech_like(3.0, seed=9))  # the file changes after the prefetch started
    os.utime(dub, ns=(0, 10**18))
    assert prefetch.take(files, None, None) is None
    assert validate_inputs(files)[0].probe.audio.duration_s == pytest.approx(3.0, abs=0.05)


def test_errors_travel_with_the_result(media):
    files = {"audio": str(media.dub)}
    assert prefetch_inputs(files, {"nope": 1})
    with pytest.raises(InputError, match="nope"):
        validate_inputs(files, {"nope": 1})


def test_the_inputs_the_worker_hashed_are_not_read_again_by_the_job(media, tmp_path, monkeypatch):
    """With the probe cache on, the worker reads every media input's SHA-256; the job's faces cache, segment keys
    and manifest take those digests instead of reading the files again (~1 GB for a 10-min source)."""
    monkeypatch.setenv("LIPLINE_CACHE_DIR", str(tmp_path / "cache"))
    video, dub = shutil.copyfile(media.video, tmp_path / "talk.mp4"), shutil.copyfile(media.dub, tmp_path / "dub.wav")
    expected = {path: uris.sha256_file(path) for path in (video, dub)}
    files = {"video": str(video), "audio": str(dub)}
    assert prefetch_inputs(files, None)
    reads = []
    real = uris.sha256_file
    monkeypatch.setattr(uris, "sha256_file", lambda path, *a: reads.append(path) or real(path, *a))
    validate_inputs(files)
    assert [localize.input_sha256(str(p), tmp_path) for p in (video, dub)] == list(expected.values())
    assert reads == []
    os.utime(dub, ns=(1, 1))  # touched since the worker read it: read again
    assert localize.input_sha256(str(dub), tmp_path) == expected[dub] and reads == [dub]


def test_remote_inputs_are_not_prefetched():
    assert prefetch.request_key({"video": "s3://bucket/talk.mp4"}, None, None) is None
    assert not prefetch_inputs({"video": "s3://bucket/talk.mp4"}, None)


def test_the_measurement_runs_in_another_process(media):
    """No GIL shared with the flow's imports, and great-expectations never loaded into the job's process."""
    files = {"audio": str(media.dub)}
    assert prefetch.start(files, None, None, os.getpid)
    early = prefetch.take(files, None, None)
    assert early.result(timeout=120) != os.getpid()


def test_the_validation_worker_never_imports_prefect(media):
    """The worker measures and checks every role (its CPU is on the job's critical path): Prefect's ~2 CPU s of
    imports have no place there; the `probe` and `validate` Prefect tasks are built only when a flow asks."""
    code = ("import json, sys; from lipline.tasks.validate import _validate_inputs;"
            "files = json.loads(sys.argv[1]);"
            "print(json.dumps({'verdicts': [r.verdict for r in _validate_inputs(files)],"
            " 'prefect': sorted(m for m in sys.modules if m.split('.')[0] == 'prefect')[:3]}))")
    files = {"video": str(media.video), "audio": str(media.dub), "subtitles": str(media.subtitles),
             "intro": str(media.intro), "outro": str(media.outro)}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(files)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert len(result["verdicts"]) == 5 and "fail" not in result["verdicts"], result
    assert result["prefect"] == [], f"the validation imported {result['prefect']}"
