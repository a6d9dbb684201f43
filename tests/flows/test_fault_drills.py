"""Fault drills (issue 16 item 10) with real parts: `lipline run` subprocesses, real Prefect, a real SeaweedFS.

* the S3 server stopped for 30 s while the job archives: retried, completes, SHA-256 verified, never a partial
  object or an early manifest visible;
* SIGKILL of `lipline run` mid-job: no completion marker until the re-run with the same job id completes, and the
  re-run leaves nothing of the killed run behind;
* two runs with the same job id at once: one completes untouched, the other is refused in one line.

Plus the rules underneath, in-process: which store errors are retried and for how long (`StoreRetry`), and when a
job lock is live or stale (`lipline.joblock`).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import s3fs
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from lipline.errors import JobLocked, StoreError, user_error
from lipline.joblock import JobLock, host_id, lock_key
from lipline.store import Store
from lipline.tasks.archive import CHECKSUM, TRANSIENT, StoreRetry, store_error_kind
from tests import media_factory as mf
from tests.s3server import start_seaweedfs

OUTAGE_S = 30.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, Path]:
    """A 6 s talking-head clip and a 6.2 s dub: the shortest job the contracts accept."""
    d = tmp_path_factory.mktemp("drill-media")
    video = mf.talking_video(d / "talk.mp4", mf.face_png(d / "face.png"), 6.0,
                             audio=mf.write_audio(d / "orig.wav", mf.speech_like(6.0, seed=3)))
    return video, mf.write_audio(d / "dub.wav", mf.speech_like(6.2))


def start_run(clip, store: str | Path, job_id: str, log: Path, env: dict) -> subprocess.Popen:
    """`lipline run` in the background; stdout and stderr to `log` (a pipe nobody reads could block it)."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "lipline.cli", "run", str(clip[0]), str(clip[1]), "--engine",
                                 "passthrough", "--store", str(store), "--job-id", job_id, "--quiet"],
                                stdout=out, stderr=subprocess.STDOUT, text=True, env={**os.environ, **env})


def finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> tuple[int, str]:
    try:
        return proc.wait(timeout=timeout), log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for(condition, proc: subprocess.Popen, log: Path, what: str, timeout: float = 240.0):
    """Poll `condition` every 50 ms until it is truthy; fails if the run ends first or after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        assert proc.poll() is None, f"the run ended ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}"
        time.sleep(0.05)
    raise AssertionError(f"no {what} after {timeout} s:\n{log.read_text()[-4000:]}")


def s3_client(server, **config) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(key=server.access_key, secret=server.secret_key, skip_instance_cache=True,
                             client_kwargs={"endpoint_url": server.endpoint}, config_kwargs=config)


def assert_complete(read, names: list[str], expected: list[str]) -> dict:
    """The job folder holds exactly `expected`, and every output's bytes match the manifest's SHA-256."""
    assert sorted(names) == sorted(expected), names
    manifest = json.loads(read("manifest.json"))
    assert sorted(manifest["outputs"]) == sorted(n for n in expected if n != "manifest.json")
    for name, out in manifest["outputs"].items():
        assert hashlib.sha256(read(name)).hexdigest() == out["sha256"], name
    return manifest


def one_error_line(text: str) -> str:
    assert "Traceback" not in text, text[-4000:]
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text[-4000:]
    return lines[0]


# --- the rules, in-process -------------------------------------------------------------------------------------

def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


def wrapped(cause: BaseException, outer: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize("exc, kind", [
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b/k"), TRANSIENT),
    (wrapped(ConnectionRefusedError(111, "refused"), StoreError("could not delete s3://b/k")), TRANSIENT),
    (ConnectionResetError(104, "reset"), TRANSIENT),
    (ReadTimeoutError(endpoint_url="http://127.0.0.1:1/b/k"), TRANSIENT),
    (wrapped(client_error("SlowDown", 503), OSError(5, "SlowDown")), TRANSIENT),
    (wrapped(client_error("InternalError", 500), OSError(121, "InternalError")), TRANSIENT),
    (wrapped(client_error("AccessDenied", 403), PermissionError("Access Denied")), None),
    (wrapped(client_error("InvalidAccessKeyId", 403), PermissionError("bad key")), None),
    (wrapped(client_error("NoSuchBucket", 404), FileNotFoundError("no bucket")), None),
    (wrapped(client_error("BadDigest", 400), OSError(22, "BadDigest")), CHECKSUM),
    (StoreError("checksum mismatch after upload of s3://b/k: local 1, stored 2"), CHECKSUM),
    (ValueError("bad input"), None),
])
def test_which_store_errors_are_retried(exc, kind):
    assert store_error_kind(exc) == kind


class Clock:
    def __init__(self) -> None:
        self.now, self.slept = 0.0, []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def flaky(errors: list[BaseException], result="ok"):
    calls = []

    def operation():
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result
    return operation, calls


def test_retry_waits_out_an_outage_with_backoff_and_resets_after_a_success():
    clock = Clock()
    retry = StoreRetry(sleep=clock.sleep, clock=lambda: clock.now)
    refused = [EndpointConnectionError(endpoint_url="http://x") for _ in range(7)]
    operation, calls = flaky(refused)
    assert retry.call("upload of final.mp4", operation) == "ok" and len(calls) == 8
    assert clock.slept == [1, 2, 4, 8, 10, 10, 10]
    operation, calls = flaky([EndpointConnectionError(endpoint_url="http://x")])
    assert retry.call("upload of manifest.json", operation) == "ok" and clock.slept[-1] == 1  # a new outage


def test_retry_gives_up_after_its_budget_in_one_line():
    clock = Clock()
    retry = StoreRetry(budget_s=120, sleep=clock.sleep, clock=lambda: clock.now)
    operation, calls = flaky([EndpointConnectionError(endpoint_url="http://x") for _ in range(100)])
    with pytest.raises(StoreError, match=r"kept failing for \d+ s \(\d+ attempts\) while archiving \(upload of "
                                         r"final.mp4\).*run the job again") as info:
        retry.call("upload of final.mp4", operation)
    assert sum(clock.slept) <= 120 and sum(clock.slept) > 100
    assert "\n" not in str(user_error(info.value))


@pytest.mark.parametrize("errors, calls_made", [
    ([wrapped(client_error("AccessDenied", 403), PermissionError("Access Denied"))], 1),  # never retried
    ([StoreError("checksum mismatch after upload")] * 2, 2),  # retried once, at once
])
def test_deterministic_errors_are_not_waited_for(errors, calls_made):
    clock = Clock()
    operation, calls = flaky(list(errors))
    with pytest.raises(type(errors[0])):
        StoreRetry(sleep=clock.sleep, clock=lambda: clock.now).call("upload of final.mp4", operation)
    assert len(calls) == calls_made and clock.slept == []


def lock_holder(store: Path, job_id: str) -> subprocess.Popen:
    """Another process that takes the lock of `job_id` and keeps it (prints 'locked' once it holds it)."""
    code = ("import sys, time; from lipline.store import Store; from lipline.joblock import JobLock; "
            f"JobLock(Store({str(store)!r}), {job_id!r}).acquire(); print('locked', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_live_lock_refuses_and_a_killed_holders_lock_is_taken_over(tmp_path):
    store = Store(str(tmp_path / "store"))
    holder = lock_holder(tmp_path / "store", "j1")
    try:
        with pytest.raises(JobLocked, match=rf"job j1 is already running \(pid {holder.pid} on .*--replace does "):
            JobLock(store, "j1").acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = JobLock(store, "j1").acquire()
    try:
        assert lock.taken_over["pid"] == holder.pid and "is gone" in lock.taken_over["stale_because"]
        assert store.read_json(lock_key("j1"))["token"] == lock.token
    finally:
        lock.release()
    assert list((tmp_path / "store" / ".lipline-locks").iterdir()) == []


def test_a_lock_from_another_host_lives_until_its_heartbeat_expires(tmp_path):
    store = Store(str(tmp_path / "store"))
    elsewhere = {"job_id": "j2", "token": "t", "host": "render-7", "host_id": "render-7/boot/pid:[1]", "pid": 1,
                 "started_at": "2026-11-30T10:00:00+00:00", "heartbeat_at": "2026-11-30T10:05:00+00:00",
                 "expires_at": "(in 5 min)", "expires_at_epoch": time.time() + 300}
    assert elsewhere["host_id"] != host_id()
    store.put_json(elsewhere, lock_key("j2"))
    with pytest.raises(JobLocked, match="pid 1 on render-7"):
        JobLock(store, "j2").acquire()
    store.put_json({**elsewhere, "expires_at_epoch": time.time() - 1}, lock_key("j2"))
    lock = JobLock(store, "j2").acquire()
    assert "heartbeat stopped" in lock.taken_over["stale_because"]
    lock.release()


def test_the_heartbeat_renews_the_lock(tmp_path):
    store = Store(str(tmp_path / "store"))
    lock = JobLock(store, "j3", heartbeat_s=0.2).acquire()
    try:
        first = store.read_json(lock_key("j3"))["expires_at_epoch"]
        deadline = time.monotonic() + 10
        while store.read_json(lock_key("j3"))["expires_at_epoch"] == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.read_json(lock_key("j3"))["expires_at_epoch"] > first
    finally:
        lock.release()


# --- the drills ------------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_drill_s3_server_stopped_for_30_s_during_the_archive(clip, tmp_path):
    server = start_seaweedfs(tmp_path / "weed")  # this test's own server: it is stopped and started again
    port = int(server.endpoint.rsplit(":", 1)[1])
    work, log = tmp_path / "work", tmp_path / "run.log"
    work.mkdir()
    prefix = f"{server.bucket}/d/outage"
    proc = start_run(clip, f"s3://{server.bucket}/d", "outage", log, {**server.env(), "LIPLINE_WORK_DIR": str(work)})
    seen: list[tuple[set[str], str | None]] = []  # every listing of the job folder, with final.mp4's SHA-256
    done = threading.Event()

    def watch() -> None:  # a reader polling the bucket through the outage and the recovery
        fs = s3_client(server, connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
        while not done.is_set():
            try:
                fs.invalidate_cache()
                names = {p.rsplit("/", 1)[1] for p in fs.ls(prefix)}
                seen.append((names, hashlib.sha256(fs.cat(f"{prefix}/final.mp4")).hexdigest()
                             if "final.mp4" in names else None))
            except Exception:  # noqa: BLE001 - the server is down (or the key went between list and read)
                pass
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        # The final encode (local only) has started: the archive comes next. Stop the store now, and keep it
        # stopped for 30 s from the archive's first failed attempt.
        wait_for(lambda: list(work.glob("lipline-outage-*/final")), proc, log, "final encode")
        watcher.start()
        server.process.kill()
        server.process.wait()
        wait_for(lambda: "retrying in" in log.read_text(), proc, log, "an archive retry")
        archive_failing = time.monotonic()
        while time.monotonic() - archive_failing < OUTAGE_S:
            assert proc.poll() is None, f"the run gave up during the outage:\n{log.read_text()[-4000:]}"
            time.sleep(0.2)
        server = start_seaweedfs(tmp_path / "weed", s3_port=port)  # same port, same data
        rc, out = finish(proc, log)
        assert rc == 0, out[-4000:]
        assert "Traceback" not in out
        fs = s3_client(server)
        manifest = assert_complete(lambda name: fs.cat(f"{prefix}/{name}"),
                                   [p.rsplit("/", 1)[1] for p in fs.ls(prefix)],
                                   ["final.mp4", "manifest.json", "report.html", "validation.json"])
    finally:
        done.set()
        watcher.join(timeout=10)
        server.stop()
        if proc.poll() is None:
            proc.kill()
    assert any(names for names, _ in seen), "the watcher never saw the job folder"
    for names, final_sha in seen:  # never a partial deliverable, never a manifest before its outputs
        assert final_sha is None or final_sha == manifest["outputs"]["final.mp4"]["sha256"]
        assert "manifest.json" not in names or set(manifest["outputs"]) <= names, names


@pytest.mark.integration
def test_drill_sigkill_mid_job_then_rerun_with_the_same_job_id(clip, tmp_path):
    store, work, log = tmp_path / "store", tmp_path / "work", tmp_path / "run.log"
    work.mkdir()
    env = {"LIPLINE_WORK_DIR": str(work)}
    job = store / "killed"
    proc = start_run(clip, store, "killed", log, env)
    try:
        wait_for(lambda: (job / "validation.json").exists(), proc, log, "validation.json")  # now normalizing
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # What a killed run leaves: no completion marker, no deliverable; its validation.json, its lock, its work dir.
    assert sorted(p.name for p in job.iterdir()) == ["validation.json"]
    assert json.loads((store / lock_key("killed")).read_text())["pid"] == proc.pid
    assert len(list(work.iterdir())) == 1

    rc, out = finish(start_run(clip, store, "killed", log, env), log)
    assert rc == 0, out[-4000:]
    assert_complete(lambda name: (job / name).read_bytes(), [p.name for p in job.iterdir()],
                    ["final.mp4", "manifest.json", "report.html", "validation.json"])
    assert list(work.iterdir()) == [], "the killed run's work dir must go with the re-run"
    assert list((store / ".lipline-locks").iterdir()) == []


class JobFolder:
    """The job `same` and the lock folder of one store root, read from the outside."""

    def __init__(self, kind: str, tmp_path: Path, request) -> None:
        if kind == "s3":
            server = request.getfixturevalue("s3_env")
            self.root, self.env = f"s3://{server.bucket}/twice-{tmp_path.name}", server.env()
            self.fs, self.base = s3_client(server), f"{server.bucket}/twice-{tmp_path.name}"
        else:
            self.root, self.env = str(tmp_path / "store"), {}
            self.fs, self.base = fsspec_local(), str(tmp_path / "store")

    def names(self, folder: str) -> list[str]:
        """Every key under `folder`, relative to it (work/... included; not the folder's own entry, which
        SeaweedFS keeps once its last key is gone)."""
        self.fs.invalidate_cache()
        path = f"{self.base}/{folder}"
        return [key for key in (p[len(path) + 1:] for p in self.fs.find(path)) if key]

    def read(self, name: str) -> bytes:
        return self.fs.cat_file(f"{self.base}/same/{name}")


def fsspec_local():
    import fsspec

    return fsspec.filesystem("file")


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_drill_two_runs_with_the_same_job_id_at_once(clip, tmp_path, kind, request):
    store = JobFolder(kind, tmp_path, request)
    runs = [start_run(clip, store.root, "same", tmp_path / f"run{i}.log", store.env) for i in (1, 2)]
    results = [finish(proc, tmp_path / f"run{i}.log") for i, proc in zip((1, 2), runs)]
    assert sorted(rc for rc, _ in results) == [0, 1], [out[-3000:] for _, out in results]
    line = one_error_line(next(out for rc, out in results if rc == 1))
    assert "job same is already running" in line and ".lipline-locks/same.json" in line, line
    assert_complete(store.read, store.names("same"),
                    ["final.mp4", "manifest.json", "report.html", "validation.json"])
    assert store.names(".lipline-locks") == []


def test_replace_does_not_break_a_live_lock_and_a_rerun_starts_clean(tmp_path):
    from lipline.flows.localize import open_job
    from lipline.params import LocalizeParams

    root = tmp_path / "store"
    params = LocalizeParams(video_uri=str(tmp_path / "v.mp4"), audio_uri=str(tmp_path / "a.wav"), engine="passthrough",
                            job_id="j4", store=str(root), replace=True)
    for key in ("j4/manifest.json", "j4/final.mp4", "j4/validation.json"):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text("done")
    holder = lock_holder(root, "j4")
    try:
        with pytest.raises(JobLocked, match="--replace does not stop a running job"):
            open_job(params)
        assert sorted(p.name for p in (root / "j4").iterdir()) == ["final.mp4", "manifest.json", "validation.json"]
    finally:
        holder.kill()
        holder.wait()
    (root / "j4/manifest.json").unlink()  # a run that died before completing: no manifest, leftovers
    (root / "j4/work").mkdir()
    (root / "j4/work/segment-0000.mp4").write_text("old")
    job = open_job(params.model_copy(update={"replace": False}))
    try:
        assert list((root / "j4").rglob("*")) == [], "the re-run starts without the killed run's leftovers"
        assert job.lock.taken_over["pid"] == holder.pid
    finally:
        job.lock.release()
        job.workdir.rmdir()
