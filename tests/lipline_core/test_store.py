import hashlib
import json
import os

import pytest
import s3fs

from lipline.errors import StoreError
from lipline.store import Store


def test_local_store_put_verifies_and_leaves_no_temp_files(tmp_path, monkeypatch):
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(3_000_000))
    store = Store(str(tmp_path / "store"))
    monkeypatch.setattr("lipline.store.sha256_file", None)  # a local copy hashes what it copies: no separate pass
    rec = store.put_file(src, "job1/final.mp4")
    assert rec.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert (tmp_path / "store" / "job1" / "final.mp4").read_bytes() == src.read_bytes()
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


class _CorruptingFS:
    """An fsspec memory filesystem whose uploads flip one byte on the way: what a faulty proxy or disk does."""

    @staticmethod
    def make():
        from fsspec.implementations.memory import MemoryFileSystem

        class Corrupting(MemoryFileSystem):
            protocol = "corrupting"
            store = {}  # its own bucket, not the shared memory:// one
            pseudo_dirs = [""]

            def put_file(self, lpath, rpath, **kwargs):
                data = bytearray(open(lpath, "rb").read())
                data[len(data) // 2] ^= 0xFF
                self.pipe_file(rpath, bytes(data))

        return Corrupting


def test_checksum_mismatch_after_upload_is_an_error(tmp_path):
    import fsspec

    fsspec.register_implementation("corrupting", _CorruptingFS.make(), clobber=True)
    src = tmp_path / "final.mp4"
    src.write_bytes(os.urandom(100_000))
    store = Store("corrupting://deliveries")
    with pytest.raises(StoreError) as err:
        store.put_file(src, "job/final.mp4")
    local = hashlib.sha256(src.read_bytes()).hexdigest()
    assert "checksum mismatch" in str(err.value) and local in str(err.value)
    assert "corrupting://deliveries/job/final.mp4" in str(err.value)


def test_s3_refuses_bytes_that_do_not_match_the_checksum(s3_env, tmp_path, monkeypatch):
    """The SHA-256 travels with the request: the server itself refuses a body that changed on the way."""
    src = tmp_path / "final.mp4"
    src.write_bytes(os.urandom(200_000))
    other = tmp_path / "changed.mp4"
    other.write_bytes(os.urandom(200_000))
    store = Store(f"s3://{s3_env.bucket}/deliveries")
    real_put = store.fs.put_file
    monkeypatch.setattr(store.fs, "put_file", lambda lpath, rpath, **kw: real_put(str(other), rpath, **kw))
    with pytest.raises(StoreError) as err:
        store.put_file(src, "sum/final.mp4")
    assert f"s3://{s3_env.bucket}/deliveries/sum/final.mp4" in str(err.value)
    assert not store.exists("sum/final.mp4")  # nothing was stored under the key
