"""Issue 16 item 7: nothing stale or half-written in the store (and item 4: a store error inside the failure
handler never replaces the job's own error)."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest

from lipline.errors import StoreError
from lipline.store import Store
from lipline.tasks import archive


@pytest.fixture
def memory_store():
    """fsspec's memory:// filesystem: a non-local, non-S3 backend."""
    store = Store(f"memory://lipline-{uuid.uuid4().hex[:8]}")
    yield store
    store.fs.rm(store.base, recursive=True)


def keys(store: Store) -> list[str]:
    return sorted(p[len(store.base) + 1:] for p in store.fs.find(store.base))


def test_other_backends_write_through_a_verified_temporary_key(memory_store, tmp_path, monkeypatch):
    src = tmp_path / "final.mp4"
    src.write_bytes(b"x" * 100_000)
    written: list[str] = []
    real_put = memory_store.fs.put_file
    monkeypatch.setattr(memory_store.fs, "put_file", lambda lpath, rpath, **kw: (written.append(rpath),
                                                                               real_put(lpath, rpath, **kw)))
    rec = memory_store.put_file(src, "job/final.mp4")
    assert rec.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert written and all(w != memory_store._path("job/final.mp4") for w in written)  # never in place
    assert keys(memory_store) == ["job/final.mp4"]  # the temporary key is gone
    assert memory_store.fs.cat(memory_store._path("job/final.mp4")) == src.read_bytes()


def test_a_corrupted_upload_never_reaches_the_final_key(memory_store, tmp_path, monkeypatch):
    src = tmp_path / "final.mp4"
    src.write_bytes(b"y" * 10_000)
    real_put = memory_store.fs.put_file

    def truncating_put(lpath, rpath, **kw):
        real_put(lpath, rpath, **kw)
        memory_store.fs.pipe_file(rpath, b"y" * 5_000)  # the backend kept half of it

    monkeypatch.setattr(memory_store.fs, "put_file", truncating_put)
    with pytest.raises(StoreError, match="checksum mismatch"):
        memory_store.put_file(src, "job/final.mp4")
    assert keys(memory_store) == []


def test_refused_deletes_are_reported(memory_store, monkeypatch):
    memory_store.fs.pipe_file(memory_store._path("job/final.srt"), b"old")
    memory_store.fs.pipe_file(memory_store._path("job/work/seg.mp4"), b"old")

    def refuse(*args, **kwargs):
        raise PermissionError("Access Denied")

    monkeypatch.setattr(memory_store.fs, "rm", refuse)
    with pytest.raises(StoreError, match=r"could not delete .*job/final\.srt: Access Denied"):
        memory_store.delete("job/final.srt")
    with pytest.raises(StoreError, match="could not delete .*job/work/"):
        memory_store.delete_prefix("job/work")


def test_archive_failure_leaves_no_deliverable_and_no_sidecar(memory_store, tmp_path, monkeypatch):
    files = {}
    for name in ("final.mp4", "final.srt", "final.vtt", "validation.json"):
        files[name] = tmp_path / name
        files[name].write_bytes(name.encode())

    def refuse_manifest(obj, key):
        raise StoreError(f"upload of {key} failed: the store went away")

    monkeypatch.setattr(memory_store, "put_json", refuse_manifest)
    with pytest.raises(StoreError, match="the store went away"):
        archive.archive_outputs(memory_store, "job", files, {"job_id": "job"})
    assert keys(memory_store) == []


def test_failure_handler_cleans_work_and_never_raises(memory_store):
    for key in ("job/final.mp4", "job/final.srt", "job/manifest.json", "job/work/segments/seg-000.mp4"):
        memory_store.fs.pipe_file(memory_store._path(key), b"stale")
    problems = archive.record_failure(memory_store, "job", ValueError("the user's error"), "lipsync")
    assert problems == []
    assert keys(memory_store) == ["job/status.json"]
    status = json.loads(memory_store.fs.cat(memory_store._path("job/status.json")))
    assert status["stage"] == "lipsync" and "the user's error" in status["reasons"][0]


def test_store_errors_in_the_failure_handler_are_reported_not_raised(memory_store, monkeypatch):
    memory_store.fs.pipe_file(memory_store._path("job/final.mp4"), b"partial")

    def broken(*args, **kwargs):
        raise PermissionError("Access Denied")

    monkeypatch.setattr(memory_store.fs, "rm", broken)
    monkeypatch.setattr(memory_store.fs, "put_file", broken)
    problems = archive.record_failure(memory_store, "job", ValueError("the user's error"), "post")
    assert any("could not delete" in p and "final.mp4" in p for p in problems)
    assert any(p.startswith("status.json not written") for p in problems)


def test_replace_removes_every_old_key(tmp_path, media):
    from lipline.flows.localize import open_job
    from lipline.params import LocalizeParams

    store = Store(str(tmp_path / "store"))
    for key in ("old/final.mp4", "old/final.srt", "old/final.vtt", "old/validation.json", "old/manifest.json",
                "old/work/synced/x.mp4"):
        (tmp_path / "store" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "store" / key).write_text("old")
    params = LocalizeParams(video_uri=str(media.video), audio_uri=str(media.dub), engine="passthrough",
                            job_id="old", store=str(tmp_path / "store"), replace=True)
    job = open_job(params)
    try:
        assert not (tmp_path / "store" / "old").exists() or list((tmp_path / "store" / "old").rglob("*")) == []
    finally:
        job.workdir.rmdir()


def test_a_completed_job_holds_no_sidecar_of_an_earlier_run(memory_store, tmp_path):
    for key in ("job/final.srt", "job/final.vtt", "job/status.json"):  # left by an interrupted earlier run
        memory_store.fs.pipe_file(memory_store._path(key), b"stale")
    final = tmp_path / "final.mp4"
    final.write_bytes(b"new")
    archive.archive_outputs(memory_store, "job", {"final.mp4": final}, {"job_id": "job"})
    assert keys(memory_store) == ["job/final.mp4", "job/manifest.json"]
