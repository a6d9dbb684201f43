"""One run per job id at a time: a lock record in the job's store, created atomically.

The lock is the key ``STORE/.lipline-locks/JOB.json``, created with `Store.put_if_absent` (a local folder: a hard
link of a complete file; S3: ``PutObject`` with ``If-None-Match: *``), so of two runs that start together exactly
one gets it. It is taken before the job writes anything and removed when the run ends, failed or not. The record
holds the job id, a random token, the host (its name, and for the pid rule its boot and pid namespace), the pid and
that process's start time, when the run started, its last heartbeat and when the lock expires; a thread renews the
heartbeat every `HEARTBEAT_S` (60 s), pushing the expiry to `TTL_S` (10 min) after it.

The rule: a lock is **stale**, and the next run of the job id takes it over, when
  1. on the host that holds it (same hostname, boot and pid namespace), its process is gone: that pid is not
     running, is a zombie or is another process now (a different start time) — a SIGKILLed run is stale at once,
     a running one is live however old its heartbeat;
  2. on any other host, its heartbeat stopped: the expiry has passed (a host that died or lost the store for
     10 min; clocks of hosts sharing a store must agree to well within that).
Any other lock is **live** and the run is refused with `JobLocked` before it writes anything; ``--replace`` does
not break a live lock. Override by hand: remove ``STORE/.lipline-locks/JOB.json`` once you are sure the run that
holds it is gone (the error names the key).

Taking over is itself guarded: the breaker first creates ``JOB.json.takeover-TOKEN`` for the stale record's
token (`put_if_absent`), re-reads the lock, and deletes it only if it still holds that token; then it competes for
the lock with `put_if_absent` like any run. Of several runs that find the same stale lock, one takes it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from lipline.errors import JobLocked, StoreError, one_line
from lipline.store import Store

LOCKS = ".lipline-locks"
TTL_S = 600.0  # a lock whose heartbeat is this old is stale
HEARTBEAT_S = 60.0  # how often a running job renews its lock
TAKEOVER_TTL_S = 60.0  # a takeover marker older than this was left by a breaker that died half-way
log = logging.getLogger("lipline.joblock")


def lock_key(job_id: str) -> str:
    return f"{LOCKS}/{job_id}.json"


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")


def host_id() -> str:
    """This host as far as a pid means anything: hostname, boot id and pid namespace (two containers that share
    a hostname do not share pids)."""
    parts = [socket.gethostname()]
    for path, read in (("/proc/sys/kernel/random/boot_id", lambda p: Path(p).read_text().strip()),
                       ("/proc/self/ns/pid", os.readlink)):
        try:
            parts.append(read(path))
        except OSError:
            pass
    return "/".join(parts)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state first), None when there is no such process (or no /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start(pid: int) -> str | None:
    """When `pid` started (clock ticks since boot): tells a reused pid apart."""
    stat = _proc_stat(pid)
    return stat[19] if stat and len(stat) > 19 else None


def process_running(pid: int, started: str | None) -> bool:
    """Whether `pid` runs on this host and is the process that started at `started` (when known)."""
    if pid <= 0:
        return False
    if not Path("/proc/self/stat").exists():  # no /proc: ask the kernel
        try:
            return os.kill(pid, 0) is None
        except OSError as exc:  # PermissionError: it runs, as another user's process
            return isinstance(exc, PermissionError)
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):  # gone, or a zombie nobody reaped yet: dead all the same
        return False
    return started is None or process_start(pid) == started


def stale_reason(record: dict, *, now: float | None = None) -> str | None:
    """Why the lock `record` is stale, or None when it is live (see the module's rule)."""
    now = time.time() if now is None else now
    if record.get("host_id") == host_id():  # this host knows for sure, whatever the heartbeat says
        pid = int(record.get("pid") or 0)
        return None if process_running(pid, record.get("process_start")) else \
            f"its process {pid} on {record.get('host')} is gone"
    expires = float(record.get("expires_at_epoch") or 0)
    if now > expires:
        return f"its heartbeat stopped (last {record.get('heartbeat_at')}, expired {record.get('expires_at')})"
    return None


def _encode(record: dict) -> bytes:
    return json.dumps(record, indent=2).encode()


class JobLock:
    """The lock of one job id in one store; `acquire` it, `release` it in a ``finally``."""

    def __init__(self, store: Store, job_id: str, *, ttl_s: float = TTL_S, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.store, self.job_id, self.ttl_s, self.heartbeat_s = store, job_id, ttl_s, heartbeat_s
        self.key = lock_key(job_id)
        self.token = uuid.uuid4().hex
        self.record: dict = {}
        self.taken_over: dict | None = None  # the stale record this lock replaced, with "stale_because"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return self.store.uri(self.key)

    def acquire(self, workdir: Path | None = None) -> JobLock:
        """Take the lock (taking over a stale one) or raise `JobLocked` naming the run that holds it. `workdir`
        (this run's local work dir) is recorded so that a rerun on this host can remove it if this run dies."""
        now = time.time()
        self.record = {"job_id": self.job_id, "token": self.token, "host": socket.gethostname(),
                       "host_id": host_id(), "pid": os.getpid(), "process_start": process_start(os.getpid()),
                       "started_at": _iso(now), "workdir": str(workdir) if workdir else None}
        self._renew(now)
        held: dict | None = None
        for _ in range(5):
            if self.store.put_if_absent(self.key, _encode(self.record)):
                self._thread = threading.Thread(target=self._heartbeat, name=f"lipline-lock-{self.job_id}",
                                                daemon=True)
                self._thread.start()
                return self
            held = self.read()
            if held is None:
                continue  # released in between: try again
            reason = stale_reason(held)
            if reason is None:
                break
            if self._break(held, reason):
                self.taken_over = {**held, "stale_because": reason}
        raise JobLocked(self._refusal(held or {}))

    def _refusal(self, held: dict) -> str:
        who = f"pid {held.get('pid', '?')} on {held.get('host', '?')}, started {held.get('started_at', '?')}"
        return (f"job {self.job_id} is already running ({who}, lock renewed {held.get('heartbeat_at', '?')}); wait "
                f"for it to finish; if that run is dead, remove {self.uri} (a lock from another host also expires "
                f"by itself at {held.get('expires_at', '?')}); --replace does not stop a running job")

    def leftover_workdir(self) -> Path | None:
        """The local work dir of the dead run whose lock this one took over, when that run was on this host."""
        old = self.taken_over or {}
        path = old.get("workdir")
        if not path or old.get("host_id") != host_id() or not Path(path).name.startswith(f"lipline-{self.job_id}-"):
            return None
        return Path(path)

    def _renew(self, now: float) -> None:
        self.record.update(heartbeat_at=_iso(now), expires_at=_iso(now + self.ttl_s),
                           expires_at_epoch=now + self.ttl_s)

    def read(self, key: str | None = None) -> dict | None:
        """The record at `key` (default: the lock), None when there is none; an unreadable record reads as {}."""
        key = key or self.key
        try:
            return self.store.read_json(key)
        except FileNotFoundError:
            return None
        except ValueError:  # not JSON: nobody's lock (put_if_absent never leaves a partial record)
            return {}
        except Exception as exc:  # noqa: BLE001 - any backend error: say which key could not be read
            raise StoreError(f"cannot read the job lock {self.store.uri(key)}: {one_line(exc)}") from exc

    def _break(self, held: dict, reason: str) -> bool:
        """Remove the stale lock `held`, unless another run is doing so or did; True when this call removed it."""
        marker = f"{self.key}.takeover-{held.get('token', 'none')}"
        if not self.store.put_if_absent(marker, _encode({"token": self.token, "at_epoch": time.time()})):
            other = self.read(marker)
            if other is not None and time.time() - float(other.get("at_epoch") or 0) > TAKEOVER_TTL_S:
                self.store.delete(marker)  # its breaker died half-way: the next round may take over
            return False
        try:
            current = self.read()
            if current is None or current.get("token") != held.get("token"):
                return False
            log.warning("job %s: taking over the lock %s: %s", self.job_id, self.uri, reason)
            self.store.delete(self.key)
            return True
        finally:
            self.store.delete(marker)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                current = self.read()
                if self._stop.is_set():
                    return
                if current is None or current.get("token") != self.token:
                    log.error("job %s: its lock %s was taken over by another run (%s)", self.job_id, self.uri,
                              f"pid {current.get('pid')} on {current.get('host')}" if current else "removed")
                    return
                self._renew(time.time())
                self.store.put_json(self.record, self.key)
            except Exception as exc:  # noqa: BLE001 - a store hiccup: the lock lives on until it expires
                log.warning("job %s: could not renew its lock %s (%s); trying again in %.0f s", self.job_id,
                            self.uri, one_line(exc), self.heartbeat_s)

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still this run's. Never raises (it runs in a
        ``finally``): a lock that cannot be removed is logged and goes stale when this process exits."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            current = self.read()
            if current is not None and current.get("token") == self.token:
                self.store.delete(self.key)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("job %s: could not remove its lock %s (%s); the next run of the job takes it over once "
                        "this process has exited", self.job_id, self.uri, one_line(exc))
