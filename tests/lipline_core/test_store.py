import hashlib
import json
import os

import pytest
import s3fs

from lipline.errors import StoreError
from lipline.store import Store


def test_local_store_put_verifies_and_leaves_no_temp_files(tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(3_000_000))
    store = Store(str(tmp_path / "store"))
    rec = store.put_file(src, "job1/final.mp4")
    assert rec.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert sorted(p.name for p in (tmp_path / "store" / "job1").iterdir()) == ["final.mp4"]
    store.put_json({"a": 1}, "job1/manifest.json")
    assert store.read_json("job1/manifest.json") == {"a": 1}


def test_local_store_refusing_writes_is_reported(tmp_path):
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store folder should be")  # refuses writes even for root
    with pytest.raises(StoreError, match="refuses writes"):
        Store(str(blocker)).check_writable("job")


def test_s3_store_uses_sha256_checksums(s3_env, tmp_path):
    src = tmp_path / "clip.bin"
    src.write_bytes(os.urandom(200_000))
    store = Store(f"s3://{s3_env.bucket}/deliveries")
    rec = store.put_file(src, "j/final.mp4")
    assert rec.uri == f"s3://{s3_env.bucket}/deliveries/j/final.mp4"
    head = store.fs.call_s3("head_object", Bucket=s3_env.bucket, Key="deliveries/j/final.mp4", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"]
    store.put_json({"ok": True}, "j/status.json")
    assert json.loads(store.fs.cat(f"{s3_env.bucket}/deliveries/j/status.json")) == {"ok": True}


def test_s3_store_with_wrong_credentials_refuses(s3_env, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(StoreError, match="refuses writes"):
        Store(f"s3://{s3_env.bucket}/x").check_writable("job")
    s3fs.S3FileSystem.clear_instance_cache()
