"""Issue 16 item 6: the store backend is chosen in one place (a scheme table), each backend writes through its
temporary name / single checked request as before, and `Store.put_if_absent` is an atomic create."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid

import pytest
import s3fs

from lipline import store_backends
from lipline.errors import UnknownScheme
from lipline.store import Store
from lipline.store_backends import BACKENDS, FsspecBackend, LocalBackend, S3Backend, backend_for


@pytest.mark.parametrize("root, kind", [("/srv/deliveries", LocalBackend), ("relative/store", LocalBackend),
                                        ("file:///srv/deliveries", LocalBackend), ("s3://bucket/p", S3Backend),
                                        ("s3a://bucket/p", S3Backend), ("memory://x", FsspecBackend)])
def test_one_table_chooses_the_backend(root, kind):
    assert type(backend_for(root)) is kind


def test_a_backend_registered_in_the_table_is_what_the_store_uses(monkeypatch, tmp_path):
    written = []

    class Recording(FsspecBackend):
        def write_file(self, local, key, digest, size):
            written.append(key)
            super().write_file(local, key, digest, size)

    monkeypatch.setitem(BACKENDS, "memory", Recording)
    store = Store(f"memory://table-{uuid.uuid4().hex[:8]}")
    src = tmp_path / "a.bin"
    src.write_bytes(b"abc")
    store.put_file(src, "job/a.bin")
    assert isinstance(store.backend, Recording) and written == ["job/a.bin"]
    store.delete_prefix("job")


@pytest.mark.parametrize("root, words", [("foo://bucket/x", "foo:// is not a known storage scheme"),
                                         ("gs://bucket/x", "the gs:// scheme needs a package that is not installed")])
def test_unknown_and_uninstalled_schemes_are_one_line_errors(root, words):
    with pytest.raises(UnknownScheme) as err:
        Store(root)
    assert words in str(err.value) and str(err.value).startswith(f"store {root}: ") and "\n" not in str(err.value)


def test_local_writes_rename_a_complete_temporary_file_into_place(tmp_path, monkeypatch):
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(100_000))
    store = Store(str(tmp_path / "store"))
    renames = []
    real_replace = os.replace

    def recording_replace(a, b):
        renames.append((str(a), str(b), open(a, "rb").read() == src.read_bytes()))
        real_replace(a, b)

    monkeypatch.setattr(store_backends.os, "replace", recording_replace)
    store.put_file(src, "job/final.mp4")
    [(temp, final, complete)] = renames
    assert final == str(tmp_path / "store" / "job" / "final.mp4") and temp != final and complete
    assert os.path.dirname(temp) == os.path.dirname(final)  # same folder: the rename is atomic
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "store" / "job" / "final.mp4").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_s3_writes_one_checked_request_and_reads_the_checksum_back(s3_env, tmp_path, monkeypatch):
    src = tmp_path / "final.mp4"
    src.write_bytes(os.urandom(100_000))
    store = Store(f"s3://{s3_env.bucket}/backends")
    puts, calls = [], []
    real_put, real_call = store.fs.put_file, store.fs.call_s3
    monkeypatch.setattr(store.fs, "put_file", lambda lpath, rpath, **kw: (puts.append((rpath, kw)),
                                                                         real_put(lpath, rpath, **kw))[1])
    monkeypatch.setattr(store.fs, "call_s3", lambda method, *a, **kw: (calls.append(method), real_call(method, *a, **kw))[1])
    rec = store.put_file(src, "j/final.mp4")
    [(target, kwargs)] = puts
    assert target == f"{s3_env.bucket}/backends/j/final.mp4"  # straight to the key: one PUT appears whole
    assert kwargs["ChecksumSHA256"] and kwargs["chunksize"] >= src.stat().st_size
    assert "head_object" in calls and rec.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()


def test_s3_objects_over_the_single_put_limit_go_through_a_verified_temporary_key(s3_env, tmp_path, monkeypatch):
    src = tmp_path / "big.mp4"
    src.write_bytes(os.urandom(40_000))
    monkeypatch.setattr(store_backends, "SINGLE_PUT_LIMIT", 10_000)
    store = Store(f"s3://{s3_env.bucket}/big-{uuid.uuid4().hex[:6]}")
    targets = []
    real_put = store.fs.put_file
    monkeypatch.setattr(store.fs, "put_file", lambda lpath, rpath, **kw: (targets.append(rpath),
                                                                         real_put(lpath, rpath, **kw))[1])
    store.put_file(src, "j/final.mp4")
    assert len(targets) == 1 and ".part-" in targets[0]
    assert store.fs.find(store.base) == [f"{store.base}/j/final.mp4"]
    assert store.fs.cat(f"{store.base}/j/final.mp4") == src.read_bytes()


# --- put_if_absent ------------------------------------------------------------------------------------------------


def race(store: Store, key: str, writers: int = 8) -> list[tuple[bytes, bool]]:
    """`writers` threads released together, each creating `key` with its own bytes."""
    barrier = threading.Barrier(writers)
    results: list[tuple[bytes, bool]] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        data = f"owner-{i}-{uuid.uuid4().hex}".encode()
        barrier.wait()
        try:
            results.append((data, store.put_if_absent(key, data)))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return results


def read(store: Store, key: str) -> bytes:
    return store.fs.cat_file(store._path(key))


def test_local_put_if_absent_creates_once(tmp_path):
    store = Store(str(tmp_path / "store"))
    assert store.put_if_absent("job/.lock", b"first") is True
    assert store.put_if_absent("job/.lock", b"second") is False
    assert read(store, "job/.lock") == b"first"
    assert sorted(p.name for p in (tmp_path / "store" / "job").iterdir()) == [".lock"]  # no temporary file left


def test_local_put_if_absent_race_has_exactly_one_winner(tmp_path):
    store = Store(str(tmp_path / "store"))
    for round_ in range(5):
        results = race(store, f"job{round_}/.lock")
        winners = [data for data, won in results if won]
        assert len(results) == 8 and len(winners) == 1
        assert read(store, f"job{round_}/.lock") == winners[0]
        assert os.listdir(tmp_path / "store" / f"job{round_}") == [".lock"]


def test_s3_put_if_absent_is_refused_by_the_server_the_second_time(s3_env):
    store = Store(f"s3://{s3_env.bucket}/locks-{uuid.uuid4().hex[:6]}")
    assert store.put_if_absent("job/.lock", b"first") is True
    assert store.put_if_absent("job/.lock", b"second") is False  # HTTP 412 PreconditionFailed
    assert read(store, "job/.lock") == b"first"
    assert store.exists("job/.lock")


def test_s3_put_if_absent_race_has_exactly_one_winner(s3_env):
    store = Store(f"s3://{s3_env.bucket}/race-{uuid.uuid4().hex[:6]}")
    for round_ in range(3):
        results = race(store, f"job{round_}/.lock")
        winners = [data for data, won in results if won]
        assert len(results) == 8 and len(winners) == 1
        assert read(store, f"job{round_}/.lock") == winners[0]


def test_s3_put_if_absent_errors_other_than_exists_are_store_errors(s3_env, monkeypatch):
    from lipline.errors import StoreError

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        with pytest.raises(StoreError, match=r"could not create s3://.*/job/\.lock: "):
            Store(f"s3://{s3_env.bucket}/denied").put_if_absent("job/.lock", b"x")
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


def test_other_backends_put_if_absent_creates_once_without_leftovers():
    store = Store(f"memory://create-{uuid.uuid4().hex[:8]}")
    try:
        assert store.put_if_absent("job/.lock", b"first") is True
        assert store.put_if_absent("job/.lock", b"second") is False
        assert read(store, "job/.lock") == b"first"
        assert store.fs.find(store.base) == [f"{store.base}/job/.lock"]
    finally:
        store.delete_prefix("job")
